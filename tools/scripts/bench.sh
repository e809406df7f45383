#!/usr/bin/env bash
# make bench: builds the release functions, the hello-world baseline and the bench harness, installs
# Dynoxide (a DynamoDB-compatible server, for the renew runs) into .tools/ once, runs every
# benchmark on 127.0.0.1 and writes BENCHMARKS.md. BENCH_QUICK=1 runs small sizes (a smoke run,
# marked so in the report). Builds go to $CARGO_TARGET_DIR when set (target/ otherwise).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
dynoxide=$(tools/scripts/ensure-dynoxide.sh)
release="${CARGO_TARGET_DIR:-target}/release"
echo "bench: building release binaries" >&2
# The functions in one build of their own, as deployed: built together with the harness they would
# share its dependencies' features (cargo unifies features per build) and measure larger. The
# hello-world baseline likewise, alone, so its init is lambda_runtime's and nothing else's.
cargo build --release --quiet -p webhook-ingest -p verify -p renew -p refund -p checkout -p subscriptions -p webhook-endpoints -p deliver
cargo build --release --quiet -p hello-lambda
cargo build --release --quiet -p paycycle-bench
built=$(date +%s)
echo "bench: tools and builds ready in $((built - start)) s" >&2
args=(--dynoxide "$dynoxide" --bin-dir "$release" --out BENCHMARKS.md)
[ "${BENCH_QUICK:-}" = 1 ] && args+=(--quick)
# The template's DueShards default: renew reads the shard count once per process.
PAYCYCLE_DUE_SHARDS=64 "$release/paycycle-bench" "${args[@]}"
echo "bench: total $(( $(date +%s) - start )) s (measuring $(( $(date +%s) - built )) s)" >&2
