#!/usr/bin/env bash
# Runs Arca's whole test suite on a Debian machine: installs missing build prerequisites,
# checks formatting, lints and the compose file, then runs every test (unit, RocksDB storage conformance,
# multi-node TLS clusters, rotation against PostgreSQL, the Vault HTTP API with hvac, CLI end-to-end) with cargo-nextest (or cargo test without it).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/ensure-apt-packages.sh clang libclang-dev docker-compose \
    podman podman-compose runc netavark aardvark-dns debootstrap binutils postgresql gnupg curl prometheus \
    chromium chromium-driver
# The rotation tests run against a real PostgreSQL on 127.0.0.1:5432.
./scripts/postgres-setup.sh
# The Vault-compatibility tests drive the HTTP API with hvac, from a virtualenv.
ARCA_HVAC_PYTHON="$(./scripts/hvac-setup.sh)"
export ARCA_HVAC_PYTHON
# The Vault/OpenBao CLI tests run the real `bao` binary, from a virtualenv.
ARCA_BAO="$(./scripts/bao-setup.sh)"
export ARCA_BAO

cargo fmt --all -- --check
# arca-core's modules import one another in one direction only (ARCHITECTURE.md, "arca-core").
python3 scripts/module-cycles.py --self-test
python3 scripts/module-cycles.py --check
# The compose file is valid for docker-compose too (it is run for real with podman below).
docker-compose -f docker-compose.yml config -q
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    # nextest does not run doctests.
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
fi

# The docker-compose cluster for real: image, podman-compose up, init/unseal, kill and restart a
# node, down/up keeps the data. Needs root for podman's default storage and networking.
./tests/compose/compose_test.sh "${CARGO_TARGET_DIR:-target}/debug/arca"
