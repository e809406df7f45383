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
target/debug/paycycle-dev serve --port "$port" --ready-file "$work/ready.json" --seed > "$work/stack.log" 2>&1 &
stack_pid=$!
cleanup() { kill "$stack_pid" 2>/dev/null || true; wait "$stack_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 600); do
  [[ -s "$work/ready.json" ]] && break
  kill -0 "$stack_pid" 2>/dev/null || { cat "$work/stack.log" >&2; exit 1; }
  sleep 0.1
done
key="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_key"])' "$work/ready.json")"
# Every operation with a path id gets a real resource the stack seeded (serve --seed), one per
# operation that changes it; the links in openapi.yaml carry the ids of what fuzzing creates.
python3 - "$work/ready.json" > "$work/schemathesis.toml" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["seeded"]
ops = [
    ("getSubscription", {"path.id": s["subscription"]}),
    ("cancelSubscription", {"path.id": s["cancel"]}),
    ("pauseSubscription", {"path.id": s["pause"]}),
    ("resumeSubscription", {"path.id": s["resume"]}),
    ("changePlan", {"path.id": s["plan"]}),
    ("listSubscriptions", {"query.customer_id": s["customer"]}),
    ("getPayment", {"path.id": s["payment"]}),
    ("createRefund", {"path.id": s["refund"]}),
    ("getWebhookEndpoint", {"path.id": s["endpoint"]}),
    ("rotateWebhookSecret", {"path.id": s["endpoint"]}),
    ("listWebhookDeliveries", {"path.id": s["endpoint"]}),
    ("deleteWebhookEndpoint", {"path.id": s["endpoint_to_delete"]}),
    ("redeliverEvent", {"path.id": s["event"]}),
]
for operation, params in ops:
    print("[[operations]]")
    print(f'include-operation-id = "{operation}"')
    print("parameters = {" + ", ".join(f'"{k}" = "{v}"' for k, v in params.items()) + "}")
    print()
PY
echo "fuzzing http://127.0.0.1:$port with $examples examples per operation"
.venv/bin/schemathesis --config-file "$work/schemathesis.toml" run openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" \
  --seed "${FUZZ_SEED:-20261123}" \
  --no-color \
  "$@"
