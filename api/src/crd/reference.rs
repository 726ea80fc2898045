//! Renders the CRD reference (`docs/reference/crds.md`) from the generated
//! schemas, so field names, types, constraints and descriptions in the docs
//! are always the ones the API server enforces.

use std::fmt::Write;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};

/// The whole reference document for the given CRDs.
pub fn render(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from(
        "<!-- Generated from the Rust types in api/src/crd by `cargo run -p caracal-api --bin crdgen`. Do not edit. -->\n\
         # Custom resource reference\n\n\
         All resources are namespaced, in API group `caracal.dev`, version `v1alpha1`. Money is a \
         decimal string of US dollars with at most 6 decimal places (`\"12.50\"`); inside Caracal it \
         is an integer number of micro-dollars. Rules marked *CEL* are checked by the API server \
         at `kubectl apply` time.\n",
    );
    for crd in crds {
        let names = &crd.spec.names;
        let version = &crd.spec.versions[0];
        let _ = write!(
            out,
            "\n## {kind}\n\n`kubectl get {plural}` (short names: {short}).\n",
            kind = names.kind,
            plural = names.plural,
            short = names
                .short_names
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        if let Some(columns) = &version.additional_printer_columns {
            let cols: Vec<String> = columns
                .iter()
                .map(|c| format!("{} (`{}`)", c.name, c.json_path))
                .collect();
            let _ = writeln!(out, "Columns: {}.", cols.join(", "));
        }
        let Some(root) = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        else {
            continue;
        };
        for part in ["spec", "status"] {
            if let Some(props) = root.properties.as_ref().and_then(|p| p.get(part)) {
                let _ = write!(out, "\n### `{part}`\n\n");
                if let Some(desc) = &props.description {
                    let _ = writeln!(out, "{}\n", one_line(desc));
                }
                out.push_str("| field | type | required | description |\n|---|---|---|---|\n");
                fields(&mut out, props, part);
            }
        }
    }
    out
}

fn fields(out: &mut String, schema: &JSONSchemaProps, path: &str) {
    rules(out, schema, path);
    let Some(props) = &schema.properties else {
        return;
    };
    let required = schema.required.as_deref().unwrap_or_default();
    for (name, prop) in props {
        let field = format!("{path}.{name}");
        let _ = writeln!(
            out,
            "| `{field}` | {ty} | {req} | {desc} |",
            ty = type_of(prop),
            req = if required.contains(name) { "yes" } else { "" },
            desc = describe(prop),
        );
        fields(out, prop, &field);
        if let Some(items) = prop.items.as_ref().and_then(|i| match i {
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(s) => Some(s),
            _ => None,
        }) {
            fields(out, items, &format!("{field}[]"));
        }
    }
}

fn rules(out: &mut String, schema: &JSONSchemaProps, path: &str) {
    for rule in schema
        .x_kubernetes_validations
        .as_deref()
        .unwrap_or_default()
    {
        if schema.properties.is_some() {
            let _ = writeln!(
                out,
                "| `{path}` | | | *CEL*: {} (`{}`) |",
                rule.message.as_deref().unwrap_or(""),
                rule.rule.replace('|', "\\|")
            );
        }
    }
}

fn type_of(s: &JSONSchemaProps) -> String {
    let base = s.type_.clone().unwrap_or_else(|| "object".into());
    match (&s.items, base.as_str()) {
        (Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(i)), "array") => {
            format!("array of {}", type_of(i))
        }
        _ => base,
    }
}

fn describe(s: &JSONSchemaProps) -> String {
    let mut parts = vec![one_line(s.description.as_deref().unwrap_or(""))];
    if let Some(values) = &s.enum_ {
        let vs: Vec<String> = values
            .iter()
            .map(|v| format!("`{}`", v.0.as_str().unwrap_or_default()))
            .collect();
        parts.push(format!("One of {}.", vs.join(", ")));
    }
    if let Some(p) = &s.pattern {
        parts.push(format!("Pattern `{}`.", p.replace('|', "\\|")));
    }
    if let (Some(min), Some(max)) = (s.minimum, s.maximum) {
        parts.push(format!("{min} to {max}."));
    }
    if s.properties.is_none() {
        for rule in s.x_kubernetes_validations.as_deref().unwrap_or_default() {
            parts.push(format!(
                "*CEL*: {}.",
                rule.message.as_deref().unwrap_or(&rule.rule)
            ));
        }
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}
