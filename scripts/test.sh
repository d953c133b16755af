#!/usr/bin/env bash
# Runs Arca's whole test suite on a Debian machine: installs missing build prerequisites,
# checks formatting, lints and the compose file, then runs every test (unit, RocksDB storage conformance,
# multi-node TLS clusters, CLI end-to-end) with cargo-nextest (or cargo test without it).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/ensure-apt-packages.sh clang libclang-dev docker-compose

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
