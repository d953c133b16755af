#!/usr/bin/env bash
# Quick start: on a Debian machine with the Rust toolchain, install what the build needs,
# build arca, and start a local 3-node cluster under ${1:-./arca-dev} (initialized, unsealed).
# Then, in a second terminal:   . ./arca-dev/env && arca kv put app/db password=s3cret
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-./arca-dev}"

./scripts/ensure-apt-packages.sh clang libclang-dev

# The dev profile, as the tests build it: RocksDB's C++ (most of a cold build) is compiled once
# and ./scripts/test.sh reuses it. A release build has its own copy of that C++ and would
# compile it a second time; the request path's hot dependencies are optimized in the dev
# profile already (Cargo.toml), and production images build --release (Dockerfile).
# ARCA_RELEASE=1 builds --release instead.
profile=debug
flags=()
if [ "${ARCA_RELEASE:-}" = 1 ]; then profile=release; flags=(--release); fi
echo "building arca (about 20 minutes the first time on 2 cores, mostly RocksDB's C++)"
cargo build "${flags[@]}" --locked --bin arca
exec "${CARGO_TARGET_DIR:-target}/$profile/arca" dev cluster --nodes 3 --dir "$dir"
