#!/usr/bin/env bash
# Quick start: on a Debian machine with the Rust toolchain, install what the build needs,
# build arca, and start a local 3-node cluster under ${1:-./arca-dev} (initialized, unsealed).
# Then, in a second terminal:   . ./arca-dev/env && arca kv put app/db password=s3cret
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-./arca-dev}"

./scripts/ensure-apt-packages.sh clang libclang-dev

echo "building arca (about 15 minutes the first time, mostly RocksDB)"
cargo build --release --locked --bin arca
exec "${CARGO_TARGET_DIR:-target}/release/arca" dev cluster --nodes 3 --dir "$dir"
