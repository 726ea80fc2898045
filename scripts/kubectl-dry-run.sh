#!/usr/bin/env bash
# `kubectl apply --dry-run=client` over crds/ and examples/, against a local
# discovery stub (there is no API server here; see kube-discovery-stub.py).
# Proves kubectl parses and maps every manifest; schema and CEL checks are
# done by kubernetes-validate and caracal-api's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 scripts/kube-discovery-stub.py "$port" &
stub=$!
trap 'kill $stub 2>/dev/null' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/api" >/dev/null && break; sleep 0.1; done
kc() { kubectl --server "http://127.0.0.1:$port" --cache-dir "$(mktemp -d)" "$@"; }
kc apply --dry-run=client --validate=false -f crds/
kc apply --dry-run=client --validate=false -f examples/manifests/ -f examples/dev/
