//! Known-answer tests: every RFC 6962 inclusion and consistency vector from
//! transparency-dev/merkle (copied into tests/data/rfc6962 with its licence).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use caracal_ledger::proof::{verify_consistency_bytes, verify_inclusion_bytes};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc6962")
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

/// A base64 field as bytes (null reads as empty, which no verifier accepts
/// as a hash); lengths are the verifier's business.
fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => Some(vec![]),
        _ => STANDARD.decode(v.as_str()?).ok(),
    }
}

fn proof(v: &Value) -> Option<Vec<Vec<u8>>> {
    match v {
        Value::Null => Some(vec![]),
        Value::Array(items) => items.iter().map(bytes).collect(),
        _ => None,
    }
}

fn load(kind: &str) -> Vec<(PathBuf, Value)> {
    let mut files = vec![];
    json_files(&data_dir().join(kind), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect()
}

#[test]
fn every_inclusion_vector() {
    let vectors = load("inclusion");
    assert!(vectors.len() > 60, "vectors missing: {}", vectors.len());
    for (path, v) in vectors {
        let want_err = v["wantErr"].as_bool().unwrap();
        let result = (|| {
            let index = v["leafIdx"].as_u64()?;
            let size = v["treeSize"].as_u64()?;
            let root = bytes(&v["root"])?;
            let leaf = bytes(&v["leafHash"])?;
            let proof = proof(&v["proof"])?;
            verify_inclusion_bytes(index, size, &leaf, &proof, &root).ok()
        })();
        assert_eq!(result.is_none(), want_err, "{}", path.display());
    }
}

#[test]
fn every_consistency_vector() {
    let vectors = load("consistency");
    assert!(vectors.len() > 60, "vectors missing: {}", vectors.len());
    for (path, v) in vectors {
        let want_err = v["wantErr"].as_bool().unwrap();
        let result = (|| {
            let old = v["size1"].as_u64()?;
            let new = v["size2"].as_u64()?;
            let root1 = bytes(&v["root1"])?;
            let root2 = bytes(&v["root2"])?;
            let proof = proof(&v["proof"])?;
            verify_consistency_bytes(old, new, &root1, &root2, &proof).ok()
        })();
        assert_eq!(result.is_none(), want_err, "{}", path.display());
    }
}
