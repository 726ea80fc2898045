#!/usr/bin/env bash
# Validates every Kubernetes manifest we ship, with the real Kubernetes
# schemas and kubectl. (That the committed generated files — crds/, the
# chart's crds/, docs/reference/crds.md — match the Rust types is checked by
# caracal-api's test `committed_generated_files_match_the_types`, which
# `cargo test` runs; keeping it a test avoids a second build of the world.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

kubernetes-validate --strict crds/*.yaml
scripts/kubectl-dry-run.sh
helm lint --strict charts/caracal
helm template caracal charts/caracal --namespace caracal-system --include-crds \
  --set egress.enabled=true --set "egress.namespaces={agents,research}" >"$tmp/rendered.yaml"
kubernetes-validate --strict "$tmp/rendered.yaml"
