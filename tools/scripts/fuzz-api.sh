#!/usr/bin/env bash
# make fuzz-api: schemathesis generates requests from openapi.yaml against the local stack
# (moto + PG sandbox + the functions on 127.0.0.1) and checks that no answer is a server error or
# breaks the contract. Starts the stack itself on a free port and stops it by the PID it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
examples="${FUZZ_EXAMPLES:-100}"
work="$(mktemp -d)"
cargo build --quiet -p paycycle-dev
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
target/debug/paycycle-dev serve --port "$port" --ready-file "$work/ready.json" > "$work/stack.log" 2>&1 &
stack_pid=$!
cleanup() { kill "$stack_pid" 2>/dev/null || true; wait "$stack_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 600); do
  [[ -s "$work/ready.json" ]] && break
  kill -0 "$stack_pid" 2>/dev/null || { cat "$work/stack.log" >&2; exit 1; }
  sleep 0.1
done
key="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$work/ready.json")"
echo "fuzzing http://127.0.0.1:$port with $examples examples per operation"
.venv/bin/schemathesis run openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" \
  --seed "${FUZZ_SEED:-20261123}" \
  --no-color \
  "$@"
