#!/usr/bin/env bash
# Runs Arca's whole test suite on a Debian machine: installs missing build prerequisites,
# checks formatting, lints and the compose file, then runs every test (unit, RocksDB storage conformance,
# multi-node TLS clusters, CLI end-to-end) with cargo-nextest (or cargo test without it).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in clang libclang-dev docker-compose; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing build prerequisites: ${need[*]}"
    sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi

cargo fmt --all -- --check
# No container engine here: check the compose file is valid (the e2e tests run the same
# topology as processes).
docker-compose -f docker-compose.yml config -q
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    # nextest does not run doctests.
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
fi
