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

# The browser test (tests/tests/browser_checkout.rs) drives Debian's Chromium through chromedriver;
# fonts-nanum renders the Korean pages in its screenshots. Installed only when missing, and only
# where we can (apt-get present, running as root); elsewhere the test says loudly that it skipped.
# With Debian's recommended packages, as the install the test was proven on (apt history here).
browser_packages() {
  local missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  [ -d /usr/share/fonts/truetype/nanum ] || missing+=(fonts-nanum)
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" -ne 0 ]; then
    echo "==> bootstrap: ${missing[*]} missing and apt-get/root unavailable: the browser test will skip" >&2
    return 0
  fi
  echo "==> bootstrap: installing ${missing[*]} (once)"
  local log
  log=$(mktemp)
  if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$log" 2>&1 ||
         { apt-get update -q >>"$log" 2>&1 &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$log" 2>&1; }; }; then
    echo "==> bootstrap: could not install ${missing[*]}:" >&2
    tail -n 20 "$log" >&2
  fi
  rm -f "$log"
}

browser_packages
