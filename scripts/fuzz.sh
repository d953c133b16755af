#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input that live in crates without RocksDB (arca-crypto:
# unseal/rekey shares, OpenPGP keys, stored ciphertext from peers and backups) with
# cargo-fuzz (libFuzzer) on the nightly toolchain, SECONDS per target (default 300).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Installs cargo-fuzz from crates.io if missing. Corpora and crash artifacts stay under
# fuzz/corpus and fuzz/artifacts; a crash stops the run with the reproducing input's path.
# The other parsers (policies, JWTs, HTTP bodies, gRPC and node-to-node messages, backups)
# live in crates that link RocksDB, whose C++ a sanitizer build would recompile (about 30 min
# here); they are not fuzzed yet.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(shares pgp_key sealed_records)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/arca/fuzz-target}"
log=$(mktemp -t arca-fuzz.XXXXXX)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t for ${seconds}s"
  status=0
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^Done ' "$log" || tail -5 "$log"
  if [ "$status" -ne 0 ]; then
    echo "$t failed (exit $status); crash inputs: $(ls "artifacts/$t" 2>/dev/null | tr '\n' ' ')" >&2
    tail -30 "$log" >&2
    exit 1
  fi
done
rm -f "$log"
