#!/usr/bin/env bash
# Creates the project's virtualenvs (python3 -m venv + uv):
#   .venv      moto's server, cfn-lint, the SAM CLI, schemathesis (tools/requirements.txt)
#   .venv-iac  checkov, cfn-lint-serverless (with the newer cfn-lint it needs) and cargo-lambda
#              (tools/requirements-iac.txt)
# Idempotent: a stamp keyed on each requirements file makes a second run cost nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

install() {
  local venv="$1" req="$2"
  local stamp="$venv/.bootstrap-$(sha256sum "$req" | cut -c1-16)"
  [ -f "$stamp" ] && return 0
  local start
  start=$(date +%s)
  echo "==> bootstrap: $venv from $req (once)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if [ ! -x .venv/bin/uv ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
  fi
  VIRTUAL_ENV="$PWD/$venv" .venv/bin/uv pip install --quiet -r "$req"
  rm -f "$venv"/.bootstrap-*
  touch "$stamp"
  echo "==> bootstrap: $venv done in $(( $(date +%s) - start )) s"
}

install .venv tools/requirements.txt
install .venv-iac tools/requirements-iac.txt
