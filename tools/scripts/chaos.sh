#!/usr/bin/env bash
# make chaos: COUNT seeded scenarios (default 10,000) from SEED (default 20261123), JOBS at a time
# (default 16), against a Dynoxide started here on a free 127.0.0.1 port and stopped by its PID.
# Reproduce one scenario: make chaos SEED=<seed> COUNT=1
set -euo pipefail
cd "$(dirname "$0")/../.."
dynoxide=$(tools/scripts/ensure-dynoxide.sh)
cargo build --release --quiet -p paycycle-chaos
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT INT TERM
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$dynoxide" serve --host 127.0.0.1 --port "$port" --log quiet >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)))" 2>/dev/null && break
  sleep 0.1
done
target/release/paycycle-chaos --dynamodb "http://127.0.0.1:$port" \
  --seed "${SEED:-20261123}" --count "${COUNT:-10000}" --jobs "${JOBS:-16}"
