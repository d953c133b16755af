#!/usr/bin/env bash
# Fuzzes every parser of untrusted input with cargo-fuzz (libFuzzer) on the nightly toolchain,
# SECONDS per target (default 300): unseal/rekey shares, OpenPGP keys, stored ciphertext
# (arca-crypto); HCL policies, JWTs, audit records read back (arca-core); node-to-node messages
# (arca-raft); Raft snapshots from peers and uploaded backups (arca-storage); and the client
# port itself, HTTP (Vault API) and gRPC, against a running one-node vault (arca-server).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# An input that takes over 25 s is a failure too (libFuzzer's -timeout): a parser that can be
# made to spin is a denial of service.
#
# Installs cargo-fuzz from crates.io if missing. Corpora and crash artifacts stay under
# fuzz/corpus and fuzz/artifacts; a crash stops the run with the reproducing input's path.
# RocksDB's C++ is not rebuilt for the fuzz build (about 30 min here): the library the
# ordinary build made (under CARGO_TARGET_DIR, default ~/.cache/arca/target) is linked instead.
# Run scripts/test.sh or `cargo build` first; without it the fuzz build compiles RocksDB itself.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(shares pgp_key sealed_records policy jwt audit_records node_messages \
    raft_snapshot backup http_api grpc_messages)
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
built=$(find "${CARGO_TARGET_DIR:-$HOME/.cache/arca/target}" -path '*/librocksdb-sys-*/out/librocksdb.a' \
    -printf '%T@ %h\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2- || true)
if [ -n "$built" ]; then
  export ROCKSDB_LIB_DIR="$built" ROCKSDB_STATIC=1
  # The prebuilt archive is C++: its runtime is linked by hand (RocksDB's own build says so).
  export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-lstdc++"
  echo "linking RocksDB from $built"
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/arca/fuzz-target}"
# The vault targets write to RocksDB with fsync on every request: keep their files in memory.
[ -d /dev/shm ] && export TMPDIR=/dev/shm
# Built once, then each target's binary is run directly: editing the sources during a long run
# does not rebuild under it.
cargo +nightly fuzz build
bin="$CARGO_TARGET_DIR/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
log=$(mktemp -t arca-fuzz.XXXXXX)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== $t for ${seconds}s"
  status=0
  "$bin/$t" "corpus/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" -print_final_stats=1 \
    -detect_leaks=0 -rss_limit_mb=4096 -timeout=25 >"$log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^Done ' "$log" || tail -5 "$log"
  if [ "$status" -ne 0 ]; then
    echo "$t failed (exit $status); crash inputs: $(ls "artifacts/$t" 2>/dev/null | tr '\n' ' ')" >&2
    echo "reproduce with: cargo +nightly fuzz run $t artifacts/$t/<file>" >&2
    tail -30 "$log" >&2
    exit 1
  fi
done
rm -f "$log"
