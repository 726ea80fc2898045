//! A small stand-in for the API server's admission of custom resources: the
//! OpenAPI v3 schema (types, enums, patterns, required, lengths), strict
//! unknown-field checking as `kubectl apply --validate=strict` does, and every
//! CEL `x-kubernetes-validations` rule evaluated by kube's CEL interpreter.
//! Each problem is reported as `field.path: message`.

use std::{fs, path::Path};

use serde_json::Value;

/// The openAPIV3Schema of the committed CRD for `kind`.
pub fn schema_for(kind: &str) -> Value {
    let file = format!("{}.yaml", kind.to_lowercase());
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds")
        .join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let crd: Value = serde_saphyr::from_str(&text).expect("CRD parses");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every problem the API server would report for `object`, or none.
pub fn admission_errors(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().expect("object has a kind");
    let schema = schema_for(kind);
    let mut errors = Vec::new();

    let validator = jsonschema::draft4::new(&strip_nullable(&schema)).expect("schema compiles");
    for e in validator.iter_errors(object) {
        errors.push(format!("{}: {e}", dotted(e.instance_path().as_str())));
    }
    // The API server supplies apiVersion, kind and metadata itself.
    let mut body = object.clone();
    if let Some(map) = body.as_object_mut() {
        for implicit in ["apiVersion", "kind", "metadata"] {
            map.remove(implicit);
        }
    }
    unknown_fields(&schema, &body, "", &mut errors);
    if let Err(cel) = kube::core::cel::Validator::new().validate(&schema, object, None) {
        for e in cel.into_vec() {
            errors.push(format!("{}: {}", e.field_path, e.message));
        }
    }
    errors
}

/// `nullable` is OpenAPI, not JSON Schema; the objects under test never hold
/// nulls, so dropping it changes nothing but lets a draft-4 validator run.
fn strip_nullable(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "nullable")
                .map(|(k, v)| (k.clone(), strip_nullable(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_nullable).collect()),
        other => other.clone(),
    }
}

fn unknown_fields(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
                if let Some(additional) = schema.get("additionalProperties") {
                    for (k, v) in map {
                        unknown_fields(additional, v, &format!("{path}.{k}"), errors);
                    }
                }
                return;
            };
            for (k, v) in map {
                let field = format!("{path}.{k}");
                match properties.get(k) {
                    Some(sub) => unknown_fields(sub, v, &field, errors),
                    None => errors.push(format!("{}: unknown field \"{k}\"", &field[1..])),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(item_schema, v, &format!("{path}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

/// `/spec/budget/limit` -> `spec.budget.limit`.
fn dotted(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// Every YAML document in a file, as JSON values.
pub fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
