#!/usr/bin/env bash
# Installs Dynoxide (a DynamoDB-compatible server in Rust, SQLite in memory) into .tools/dynoxide
# once, from crates.io, and prints the binary's path. make bench and make chaos use it where moto
# (about a hundred requests a second, one at a time) would measure only itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=3.2.0
bin=.tools/dynoxide/bin/dynoxide
marker=.tools/dynoxide/installed-crate-version
if [ ! -x "$bin" ] || [ "$(cat "$marker" 2>/dev/null)" != "$version" ]; then
  echo "installing dynoxide-rs $version into .tools/dynoxide (once; ~5 min on 2 cores)" >&2
  cargo install --quiet --locked dynoxide-rs --version "$version" --root .tools/dynoxide >&2
  echo "$version" > "$marker"
fi
echo "$bin"
