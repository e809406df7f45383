#!/usr/bin/env bash
# make package: `sam build` with cargo-lambda (from .venv-iac, with its bundled zig) builds every
# function's release `bootstrap` for the template's architecture, then prints each function's
# deployment zip size (the zip `sam deploy` uploads), then builds the operator's `paycycle` CLI
# as a release binary for this machine and prints where it is. Offline; nothing is deployed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv-iac/bin:$PATH" SAM_CLI_TELEMETRY=0
arch="${ARCH:-x86_64}"
case "$arch" in
  x86_64|arm64) ;;
  *) echo "ARCH must be x86_64 or arm64 (Lambda's names), not $arch" >&2; exit 2 ;;
esac
start=$(date +%s)
.venv/bin/sam build --beta-features --template template.yaml --parameter-overrides "Architecture=$arch" \
  --build-dir .aws-sam/build
# The record `make deploy` deploys by: the architecture these binaries were built for
# (tools/scripts/deploy_plan.py checks every bootstrap's ELF header against it).
# And what it was built from: `make deploy` refuses a build of another template or commit.
commit="$(git rev-parse HEAD 2>/dev/null || true)"
[ -n "$commit" ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit-dirty"
printf '{"architecture": "%s", "built_at": "%s", "template_sha256": "%s", "commit": "%s"}\n' "$arch" \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(sha256sum template.yaml | cut -c1-64)" "$commit" > .aws-sam/build/paycycle-build.json
echo
echo "built in $(( $(date +%s) - start )) s for $arch (recorded in .aws-sam/build/paycycle-build.json); deployment zips:"
.venv/bin/python - <<'PY'
import io, os, zipfile
root = ".aws-sam/build"
total = 0
for fn in sorted(os.listdir(root)):
    path = os.path.join(root, fn, "bootstrap")
    if not os.path.isfile(path):
        continue
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, "bootstrap")
    size = len(buf.getvalue())
    total += size
    print(f"  {fn:<24} bootstrap {os.path.getsize(path) / 1e6:6.2f} MB   zip {size / 1e6:6.2f} MB")
print(f"  {'total':<24} {'':>20}   zip {total / 1e6:6.2f} MB")
PY

# The operator's CLI (README "Operator access"): a release binary for this machine.
cargo build --release --quiet -p paycycle-cli --bin paycycle
cli="$(cargo metadata --format-version 1 --no-deps | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/paycycle"
echo
echo "operator CLI: $cli ($(( $(stat -c %s "$cli") / 1024 )) KiB)"
