#!/usr/bin/env bash
# Quick start: on a Debian machine with the Rust toolchain, install what the build needs,
# build arca, and start a local 3-node cluster under ${1:-./arca-dev} (initialized, unsealed).
# Then, in a second terminal:   . ./arca-dev/env && arca kv put app/db password=s3cret
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-./arca-dev}"

need=()
for pkg in clang libclang-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing build prerequisites: ${need[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi

echo "building arca (about 15 minutes the first time, mostly RocksDB)"
cargo build --release --locked --bin arca
exec ./target/release/arca dev cluster --nodes 3 --dir "$dir"
