//! Agent, Policy and Delegation objects read from a directory of YAML files.
//!
//! Every `*.yaml` / `*.yml` file (not recursive) may hold several documents.
//! Each document must be one of the three Caracal kinds in
//! `caracal.dev/v1alpha1`; anything else is an error naming the file, so a
//! typo is never silently ignored. A missing namespace means `default`, as
//! `kubectl apply` would do.

use std::path::{Path, PathBuf};

use caracal_api::crd::{Agent, Delegation, Policy};
use serde_json::Value;

use super::{SetupError, io_error};

/// Everything read from a manifest directory.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    pub agents: Vec<Agent>,
    pub policies: Vec<Policy>,
    pub delegations: Vec<Delegation>,
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, SetupError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// What the directory holds, to notice changes without parsing: each
/// manifest file's name and the SHA-256 of its contents. Contents, not size
/// and modification time: an edit that keeps the size within the
/// filesystem's timestamp granularity (`"1.00"` to `"0.50"` within a second),
/// or a copy that keeps the time, must not be missed.
pub fn fingerprint(dir: &Path) -> Result<Vec<(PathBuf, [u8; 32])>, SetupError> {
    use sha2::{Digest, Sha256};
    yaml_files(dir)?
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(io_error(&path))?;
            Ok((path, Sha256::digest(&bytes).into()))
        })
        .collect()
}

fn invalid(path: &Path, message: String) -> SetupError {
    SetupError::Invalid {
        path: path.to_owned(),
        message,
    }
}

fn with_default_namespace(mut doc: Value) -> Value {
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.entry("namespace")
            .or_insert_with(|| Value::String("default".into()));
    }
    doc
}

/// The names a Kubernetes API server would accept: a namespace is a DNS
/// label, an object name a DNS subdomain. Names become file paths
/// (`credentials/NAMESPACE/NAME.env`) and key-table entries, so `..`, a
/// `/`, or `Bot` beside `bot` on a case-insensitive disk must not get in.
fn check_names(doc: &Value) -> Result<(), String> {
    let meta = doc.get("metadata");
    let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
    let name = field("name").ok_or("metadata.name is missing")?;
    let namespace = field("namespace").unwrap_or("default");
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    if !label(namespace) {
        return Err(format!(
            "metadata.namespace {namespace:?} is not a valid namespace (lowercase letters, digits and '-', at most 63)"
        ));
    }
    if name.len() > 253 || !name.split('.').all(label) {
        return Err(format!(
            "metadata.name {name:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253)"
        ));
    }
    Ok(())
}

/// Parse one file's documents into `out`. Every bad document is reported,
/// not only the first.
pub fn parse_file(text: &str, path: &Path, out: &mut Manifests) -> Result<(), SetupError> {
    let mut problems = Vec::new();
    parse_into(text, path, out, &mut problems);
    SetupError::from_problems(problems)
}

/// Parse `text` into `out`, adding what is wrong with it to `problems`.
fn parse_into(text: &str, path: &Path, out: &mut Manifests, problems: &mut Vec<SetupError>) {
    let docs: Vec<Value> = match serde_saphyr::from_multiple(text) {
        Ok(docs) => docs,
        Err(e) => return problems.push(invalid(path, e.to_string())),
    };
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        if let Err(problem) = add_document(doc, i + 1, out) {
            problems.push(invalid(path, problem));
        }
    }
}

/// Add document number `n` of a file to `out`, or say what is wrong with it.
fn add_document(doc: Value, n: usize, out: &mut Manifests) -> Result<(), String> {
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if api_version != "caracal.dev/v1alpha1" {
        return Err(format!(
            "document {n}: apiVersion {api_version:?} is not caracal.dev/v1alpha1"
        ));
    }
    let doc = with_default_namespace(doc);
    if matches!(kind.as_str(), "Agent" | "Policy" | "Delegation") {
        check_names(&doc).map_err(|e| format!("document {n} ({kind}): {e}"))?;
    }
    let bad = |e: serde_json::Error| format!("document {n} ({kind}): {e}");
    match kind.as_str() {
        "Agent" => out.agents.push(serde_json::from_value(doc).map_err(bad)?),
        "Policy" => out.policies.push(serde_json::from_value(doc).map_err(bad)?),
        "Delegation" => out
            .delegations
            .push(serde_json::from_value(doc).map_err(bad)?),
        other => {
            return Err(format!(
                "document {n}: kind {other:?} is not Agent, Policy or Delegation"
            ));
        }
    }
    Ok(())
}

/// Read every manifest in `dir`; every bad document in every file is
/// reported, not only the first.
pub fn load_dir(dir: &Path) -> Result<Manifests, SetupError> {
    let mut out = Manifests::default();
    let mut problems = Vec::new();
    for path in yaml_files(dir)? {
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_into(&text, &path, &mut out, &mut problems),
            Err(e) => problems.push(io_error(&path)(e)),
        }
    }
    SetupError::from_problems(problems).map(|()| out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: caracal.dev/v1alpha1
kind: Agent
metadata: {name: bot}
spec:
  owner: me
  identity: {apiKey: {issue: true}}
---
apiVersion: caracal.dev/v1alpha1
kind: Policy
metadata: {name: daily, namespace: team}
spec:
  targetRefs: [{name: bot}]
  budget: {limit: "1.00", window: {period: Daily, timeZone: UTC}}
"#;

    #[test]
    fn reads_several_kinds_from_one_file() {
        let mut m = Manifests::default();
        parse_file(GOOD, Path::new("a.yaml"), &mut m).unwrap();
        assert_eq!(m.agents.len(), 1);
        assert_eq!(m.agents[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(m.policies[0].metadata.namespace.as_deref(), Some("team"));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        let cases = [
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
                "apiVersion",
            ),
            (
                "apiVersion: caracal.dev/v1alpha1\nkind: Budget\nmetadata: {name: x}\n",
                "kind \"Budget\"",
            ),
            (
                "apiVersion: caracal.dev/v1alpha1\nkind: Policy\nmetadata: {name: x}\nspec: {budget: {limit: 5, window: {period: Daily}}}\n",
                "Policy",
            ),
            (
                "apiVersion: caracal.dev/v1alpha1\nkind: Agent\nmetadata: {name: x}\nspec: {owner: a, identity: {}, colour: red}\n",
                "colour",
            ),
            // Names a Kubernetes API server would refuse: they become file
            // paths and key-table entries here.
            (
                "apiVersion: caracal.dev/v1alpha1\nkind: Agent\nmetadata: {name: ../../x, namespace: team}\nspec: {owner: a, identity: {}}\n",
                "metadata.name \"../../x\"",
            ),
            (
                "apiVersion: caracal.dev/v1alpha1\nkind: Agent\nmetadata: {name: Bot, namespace: team}\nspec: {owner: a, identity: {}}\n",
                "metadata.name \"Bot\"",
            ),
            (
                "apiVersion: caracal.dev/v1alpha1\nkind: Agent\nmetadata: {name: bot, namespace: ./team}\nspec: {owner: a, identity: {}}\n",
                "metadata.namespace \"./team\"",
            ),
            (
                "apiVersion: caracal.dev/v1alpha1\nkind: Agent\nmetadata: {namespace: team}\nspec: {owner: a, identity: {}}\n",
                "metadata.name is missing",
            ),
        ];
        for (text, needle) in cases {
            let err = parse_file(text, Path::new("bad.yaml"), &mut Manifests::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("bad.yaml") && err.contains(needle), "{err}");
        }
    }

    #[test]
    fn every_bad_document_of_every_file_is_reported() {
        let dir = std::env::temp_dir().join(format!(
            "caracal-manifests-{}-{}",
            std::process::id(),
            line!()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let two_bad = format!(
            "{GOOD}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n\
             apiVersion: caracal.dev/v1alpha1\nkind: Budget\nmetadata: {{name: y}}\n"
        );
        std::fs::write(dir.join("a.yaml"), two_bad).unwrap();
        std::fs::write(dir.join("b.yaml"), "key: [unclosed\n").unwrap();
        std::fs::write(dir.join("c.yaml"), GOOD).unwrap();
        let err = load_dir(&dir).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.starts_with("3 problems: "), "{err}");
        for needle in [
            "a.yaml: document 3: apiVersion \"v1\"",
            "a.yaml: document 4: kind \"Budget\"",
            "b.yaml: ",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
        assert!(!err.contains("c.yaml"), "{err}");
    }
}
