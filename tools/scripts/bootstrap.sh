#!/usr/bin/env bash
# Creates the project's .venv (python3 -m venv + uv) with moto's server, cfn-lint and the SAM CLI.
# Idempotent: a stamp keyed on tools/requirements.txt makes a second run cost nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
req=tools/requirements.txt
stamp=".venv/.bootstrap-$(sha256sum "$req" | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
start=$(date +%s)
echo "==> bootstrap: creating .venv with moto, cfn-lint and aws-sam-cli (once)"
[ -x .venv/bin/python ] || python3 -m venv .venv
[ -x .venv/bin/uv ] || .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
VIRTUAL_ENV="$PWD/.venv" .venv/bin/uv pip install --quiet -r "$req"
rm -f .venv/.bootstrap-*
touch "$stamp"
echo "==> bootstrap: done in $(( $(date +%s) - start )) s"
