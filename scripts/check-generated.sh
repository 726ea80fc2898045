#!/usr/bin/env bash
# Regenerates the committed generated files into a temporary directory and
# fails when they differ, then validates every Kubernetes manifest we ship.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run -q --locked -p caracal-api --bin crdgen -- "$tmp" >/dev/null
for f in "$tmp"/*.yaml; do
  if ! diff -u "crds/$(basename "$f")" "$f"; then
    echo "crds/$(basename "$f") is stale: run 'cargo run -p caracal-api --bin crdgen' and commit" >&2
    exit 1
  fi
done
if ! diff -r crds charts/caracal/crds; then
  echo "charts/caracal/crds differs from crds/: run 'cargo run -p caracal-api --bin crdgen' and commit" >&2
  exit 1
fi
for doc in "$tmp"/*.md; do
  [ -e "$doc" ] || continue
  if ! diff -u "docs/reference/$(basename "$doc")" "$doc"; then
    echo "docs/reference/$(basename "$doc") is stale: run 'cargo run -p caracal-api --bin crdgen' and commit" >&2
    exit 1
  fi
done

kubernetes-validate --strict crds/*.yaml
scripts/kubectl-dry-run.sh
if [ -d charts/caracal ]; then
  helm lint --strict charts/caracal
  helm template caracal charts/caracal --namespace caracal-system --include-crds \
    --set egress.enabled=true --set "egress.namespaces={agents,research}" >"$tmp/rendered.yaml"
  kubernetes-validate --strict "$tmp/rendered.yaml"
fi
