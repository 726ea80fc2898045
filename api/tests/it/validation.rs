//! Examples are admitted and round-trip through the Rust types; each invalid
//! object is refused with a message that names the field.

use std::{fs, path::Path};

use caracal_api::crd::{Agent, Delegation, Policy};
use serde_json::{Value, json};

use crate::schema_check::{admission_errors, documents};

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn yaml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Parse through the Rust type and serialise back. Defaults may be filled in,
/// but every field the user wrote must come back with the same value.
fn round_trip(doc: &Value) -> Value {
    fn via<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Value {
        let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc}"));
        serde_json::to_value(typed).unwrap()
    }
    match doc["kind"].as_str().unwrap() {
        "Agent" => via::<Agent>(doc),
        "Policy" => via::<Policy>(doc),
        "Delegation" => via::<Delegation>(doc),
        other => panic!("unexpected kind {other}"),
    }
}

#[test]
fn examples_are_admitted_and_round_trip() {
    let mut seen = 0;
    let files = [
        yaml_files(&repo("examples/manifests")),
        yaml_files(&repo("examples/dev")),
    ];
    for file in files.concat() {
        for doc in documents(&file) {
            if doc.get("apiVersion").and_then(Value::as_str) != Some("caracal.dev/v1alpha1") {
                continue;
            }
            seen += 1;
            let errors = admission_errors(&doc);
            assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
            let back = round_trip(&doc);
            assert_contains(&back, &doc, &file.display().to_string());
        }
    }
    assert!(
        seen >= 6,
        "expected the examples to hold several resources, found {seen}"
    );
}

/// Every value in `expected` appears at the same place in `actual`.
fn assert_contains(actual: &Value, expected: &Value, at: &str) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, v) in e {
                let sub = a
                    .get(k)
                    .unwrap_or_else(|| panic!("{at}.{k} was lost in the round trip"));
                assert_contains(sub, v, &format!("{at}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{at}: list length changed");
            for (i, (x, y)) in a.iter().zip(e).enumerate() {
                assert_contains(x, y, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{at} changed in the round trip"),
    }
}

/// Each file under `tests/data/invalid/` starts with a line
/// `# expect: <field path>: <message fragment>`.
#[test]
fn invalid_objects_are_refused_naming_the_field() {
    let files = yaml_files(&repo("api/tests/data/invalid"));
    assert!(
        files.len() >= 10,
        "found only {} invalid cases",
        files.len()
    );
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks an '# expect:' line", file.display()));
        for doc in documents(&file) {
            let errors = admission_errors(&doc);
            assert!(
                errors.iter().any(|e| e.contains(expect)),
                "{}: expected an error containing {expect:?}, got {errors:#?}",
                file.display()
            );
        }
    }
}

fn policy(spec: Value) -> Value {
    json!({"apiVersion": "caracal.dev/v1alpha1", "kind": "Policy",
           "metadata": {"name": "p", "namespace": "team"}, "spec": spec})
}

/// Each CEL rule, exercised on both sides: the good object passes and its
/// twin that breaks only that rule fails with the rule's message.
#[test]
fn every_cel_rule_accepts_good_and_refuses_bad() {
    let target = json!([{"name": "a"}]);
    let daily = json!({"limit": "10", "window": {"period": "Daily"}});
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "limit must be greater than 0",
            policy(
                json!({"targetRefs": target, "budget": {"limit": "0.000001", "window": {"period": "Daily"}}}),
            ),
            policy(
                json!({"targetRefs": target, "budget": {"limit": "0.000", "window": {"period": "Daily"}}}),
            ),
        ),
        (
            "maxRequestCost must be greater than 0",
            policy(json!({"targetRefs": target, "maxRequestCost": "0.5"})),
            policy(json!({"targetRefs": target, "maxRequestCost": "0"})),
        ),
        (
            "set exactly one of targetRefs or agentSelector",
            policy(json!({"agentSelector": {"matchLabels": {"team": "x"}}, "budget": daily})),
            policy(
                json!({"targetRefs": target, "agentSelector": {"matchLabels": {"team": "x"}}, "budget": daily}),
            ),
        ),
        (
            "set exactly one of targetRefs or agentSelector",
            policy(json!({"targetRefs": target, "budget": daily})),
            policy(json!({"budget": daily})),
        ),
        (
            "needs at least one of budget, maxRequestCost or allow",
            policy(json!({"targetRefs": target, "allow": {"models": ["gpt-*"]}})),
            policy(json!({"targetRefs": target, "enforcement": "DryRun"})),
        ),
        (
            "a Calendar window needs period",
            policy(
                json!({"targetRefs": target, "budget": {"limit": "1", "window": {"type": "Calendar", "period": "Weekly"}}}),
            ),
            policy(
                json!({"targetRefs": target, "budget": {"limit": "1", "window": {"type": "Calendar", "duration": "7d"}}}),
            ),
        ),
        (
            "a Rolling window needs duration",
            policy(
                json!({"targetRefs": target, "budget": {"limit": "1", "window": {"type": "Rolling", "duration": "24h"}}}),
            ),
            policy(
                json!({"targetRefs": target, "budget": {"limit": "1", "window": {"type": "Rolling", "period": "Daily"}}}),
            ),
        ),
        (
            "timeZone applies only to Calendar windows",
            policy(
                json!({"targetRefs": target, "budget": {"limit": "1", "window": {"period": "Daily", "timeZone": "Europe/Berlin"}}}),
            ),
            policy(
                json!({"targetRefs": target, "budget": {"limit": "1", "window": {"type": "Rolling", "duration": "1h", "timeZone": "UTC"}}}),
            ),
        ),
        (
            "timeZone must be an IANA zone name",
            policy(
                json!({"targetRefs": target, "budget": {"limit": "1", "window": {"period": "Daily", "timeZone": "America/Argentina/Buenos_Aires"}}}),
            ),
            policy(
                json!({"targetRefs": target, "budget": {"limit": "1", "window": {"period": "Daily", "timeZone": "CET+1"}}}),
            ),
        ),
        (
            "an agent cannot delegate to itself",
            json!({"apiVersion": "caracal.dev/v1alpha1", "kind": "Delegation", "metadata": {"name": "d"},
                   "spec": {"parentRef": {"name": "a"}, "childRef": {"name": "b"}, "budget": daily}}),
            json!({"apiVersion": "caracal.dev/v1alpha1", "kind": "Delegation", "metadata": {"name": "d"},
                   "spec": {"parentRef": {"name": "a"}, "childRef": {"name": "a"}, "budget": daily}}),
        ),
        (
            "identity needs serviceAccountName or apiKey.issue: true",
            json!({"apiVersion": "caracal.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "a"},
                   "spec": {"owner": "t", "identity": {"apiKey": {"issue": true}}}}),
            json!({"apiVersion": "caracal.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "a"},
                   "spec": {"owner": "t", "identity": {"apiKey": {"issue": false}}}}),
        ),
    ];
    for (message, good, bad) in cases {
        let good_errors = admission_errors(&good);
        assert!(
            good_errors.is_empty(),
            "good object for {message:?} refused: {good_errors:#?}"
        );
        let bad_errors = admission_errors(&bad);
        assert!(
            bad_errors.iter().any(|e| e.contains(message)),
            "bad object for {message:?} not refused with that message: {bad_errors:#?}"
        );
    }
}

/// The CRD pattern for money and the Rust parser agree on every case.
#[test]
fn money_pattern_agrees_with_the_parser() {
    let pattern = jsonschema::draft4::new(
        &json!({"type": "string", "pattern": caracal_api::money::MONEY_PATTERN}),
    )
    .unwrap();
    for input in [
        "0",
        "1",
        "0.000001",
        "10.50",
        "1.0000001",
        "-1",
        "1e3",
        "",
        ".5",
        "1.",
        "+1",
        " 1",
        "1,00",
    ] {
        let schema_ok = pattern.is_valid(&json!(input));
        let parser_ok = caracal_api::Micros::parse_dollars(input).is_ok();
        assert_eq!(
            schema_ok, parser_ok,
            "{input:?}: schema says {schema_ok}, parser says {parser_ok}"
        );
    }
}
