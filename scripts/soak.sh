#!/usr/bin/env bash
# The fault scenarios (issue 16) in a loop: network partitions, loss and delay in-process
# (crates/core/tests/faults.rs), partitions between real node processes through TCP proxies
# (tests/partition.rs), kill -9 of real nodes (tests/crash.rs), the PostgreSQL rotation
# whose leader is killed between set and finish, restore through Raft, and the checker's own
# tests. Stops at the first failure, keeping its output; prints each round's time.
#
#   scripts/soak.sh [ROUNDS] [--long]
#
# ROUNDS defaults to 20. --long sets ARCA_SOAK=1: 60 s of flapping partitions and of kill -9
# per round instead of the default suite's 12 s and 20 s. Needs what scripts/test.sh sets up
# (PostgreSQL on 127.0.0.1:5432: scripts/postgres-setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
if [ "${2:-}" = --long ]; then export ARCA_SOAK=1; fi
filter='binary(faults) | binary(crash) | binary(partition) | package(arca-check) | test(postgres_rotation_completes_once) | test(a_restore_swaps_in)'
cargo nextest run --workspace --no-run
log=$(mktemp -t arca-soak.XXXXXX)
started=$(date +%s)
for round in $(seq 1 "$rounds"); do
  t0=$(date +%s)
  if ! cargo nextest run --workspace --no-fail-fast -E "$filter" >"$log" 2>&1; then
    grep -E "FAIL|panicked" "$log" | head -20
    echo "round $round failed; output in $log" >&2
    exit 1
  fi
  echo "round $round/$rounds passed in $(( $(date +%s) - t0 )) s"
done
echo "$rounds rounds passed in $(( $(date +%s) - started )) s"
rm -f "$log"
