#!/usr/bin/env bash
# Runs a command with one moto server for the whole run: started on a free 127.0.0.1 port, shared
# by every test through PAYCYCLE_MOTO_ENDPOINT (tests isolate themselves by resource names), and
# stopped by the PID this script started, whatever way the command ends.
set -euo pipefail
cd "$(dirname "$0")/../.."
# moto with DynamoDB's write atomicity: see moto_serialized.py.
python=.venv/bin/python
[ -x "$python" ] || { echo "with-moto: $python missing; run make bootstrap" >&2; exit 1; }

pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT INT TERM

for attempt in 1 2 3; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$python" tools/scripts/moto_serialized.py -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)))" 2>/dev/null; then
      break 2
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cleanup; pid=""
  echo "with-moto: moto did not start on port $port (attempt $attempt)" >&2
done
[ -n "$pid" ] || exit 1

export PAYCYCLE_MOTO_ENDPOINT="http://127.0.0.1:$port"
"$@"
