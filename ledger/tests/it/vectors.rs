//! Known-answer tests: every RFC 6962 inclusion and consistency vector from
//! transparency-dev/merkle (copied into tests/data/rfc6962 with its licence).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use caracal_ledger::hash::{Hash, hash_from_slice};
use caracal_ledger::proof::{verify_consistency, verify_inclusion};
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

/// A base64 field as a hash; `None` for null, bad base64 or a wrong length,
/// all of which a verifier must reject.
fn hash(v: &Value) -> Option<Hash> {
    let text = v.as_str()?;
    hash_from_slice(&STANDARD.decode(text).ok()?)
}

fn proof(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(vec![]),
        Value::Array(items) => items.iter().map(hash).collect(),
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
        let index = v["leafIdx"].as_i64().unwrap();
        let size = v["treeSize"].as_i64().unwrap();
        let result = (|| {
            let index = u64::try_from(index).ok()?;
            let size = u64::try_from(size).ok()?;
            let root = hash(&v["root"])?;
            let leaf = hash(&v["leafHash"])?;
            let proof = proof(&v["proof"])?;
            verify_inclusion(index, size, &leaf, &proof, &root).ok()
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
            let old = u64::try_from(v["size1"].as_i64()?).ok()?;
            let new = u64::try_from(v["size2"].as_i64()?).ok()?;
            let root1 = hash(&v["root1"])?;
            let root2 = hash(&v["root2"])?;
            let proof = proof(&v["proof"])?;
            verify_consistency(old, new, &root1, &root2, &proof).ok()
        })();
        assert_eq!(result.is_none(), want_err, "{}", path.display());
    }
}
