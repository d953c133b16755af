#!/usr/bin/env bash
# Arca: restart -> first read. Starts `arca dev cluster` (3 nodes), writes one key, then ROUNDS
# times: kill -9 a follower, start it again the way the dev cluster started it, unseal it the
# way the dev cluster does, and time from the process start to the first authenticated KV read
# that node answers. Prints each round and the max; RESULTS/restart.csv keeps them.
#
# Why not rerun `arca dev cluster`: it does not restart a node that dies (it only waits for
# Ctrl-C), and rerunning it on the same --dir restarts the whole cluster, with new node
# certificates, not one node. So each round does what src/cli/dev.rs does for one node (as the
# project's own tests do, tests/common/mod.rs `restart_unsealed`):
#   start: `arca server --config DIR/nodeN/node.toml` (spawn_node; its data dir and join/
#          bootstrap settings are in that file, and a node with data resumes as a member);
#   unseal: the first `threshold` shares of DIR/init.json, one at a time, until unsealed
#          (dev.rs `unseal`, over gRPC; here over HTTP PUT /v1/sys/unseal, the same core call).
# The dev cluster polls seal status every 200 ms before unsealing; this script every 5 ms, so
# the figure is the node's, not a poll interval's. Each probe is a new curl process with its
# own TLS handshake (a few ms on a 2-core box): that is the resolution.
#
# Usage: benches/compare/restart.sh
# Env: ARCA (~/.cache/arca/target/release/arca), ROUNDS (10), ARCA_BASE (8300), SETTLE (2 s
#   between rounds), RESULTS (~/.cache/arca/compare/restart-<timestamp>), KEEP_DATA (0),
#   LOAD_S (0): before each kill, this many seconds of audited reads (wrk, 64 connections, on the
#   leader), so the killed node has a write-ahead log full of records to replay.
set -Eeuo pipefail
# Name the command that failed (set -e alone would exit silently); -E: in functions too.
trap 'echo "error: ${BASH_SOURCE[0]##*/} line $LINENO: $BASH_COMMAND failed (exit $?)" >&2' ERR
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
# shellcheck source=arca.sh
source "$HERE/arca.sh"

ARCA=${ARCA:-$HOME/.cache/arca/target/release/arca}
ROUNDS=${ROUNDS:-10}
ARCA_BASE=${ARCA_BASE:-8300}
SETTLE=${SETTLE:-2}
KEEP_DATA=${KEEP_DATA:-0}
CACHE=$HOME/.cache/arca/compare
RESULTS=${RESULTS:-$CACHE/restart-$(date +%Y%m%d-%H%M%S)}
POLL_S=0.005        # probe interval
PHASE_LIMIT_S=60    # bound on each wait (listener up, unsealed, first read)

LOAD_S=${LOAD_S:-0}
for v in ROUNDS ARCA_BASE SETTLE LOAD_S; do is_uint "${!v}" || die "$v must be a whole number"; done
((LOAD_S == 0)) || need wrk "apt-get install wrk"
((ROUNDS >= 1)) || die "ROUNDS must be at least 1"
need curl "apt-get install curl"
need jq "apt-get install jq"
need ss "apt-get install iproute2"
[[ -x $ARCA ]] || die "no arca binary at $ARCA. Build it: cargo build --release --locked --bin arca (or set ARCA)"
# shellcheck disable=SC2046 # one port per word
ports_free $(arca_ports) || die "stop what listens there, or set ARCA_BASE"

arca_staleness
mkdir -p "$RESULTS" "$CACHE"
WORK=$(mktemp -d "$CACHE/restart-data.XXXXXX")
ADIR=$WORK/arca
mkdir -p "$ADIR"
CSV=$RESULTS/restart.csv
RESTARTED=()   # PIDs of the nodes this script started (the dev cluster does not know them)

CLEANED=0
cleanup() {
  local rc=$?
  cleanup_once || return
  echo "stopping: dev cluster ${ARCA_DEV_PID:-none}, restarted nodes ${RESTARTED[*]:-none}"
  arca_stop "${RESTARTED[@]}"
  cp "$ADIR"/node*-restart.log "$RESULTS/" 2>/dev/null
  # shellcheck disable=SC2086 # ARCA_DEV_PID may be empty
  cleanup_report "${ARCA_NODE_PIDS[@]}" "${RESTARTED[@]}" $ARCA_DEV_PID
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

echo "== arca dev cluster --nodes 3 --base-port $ARCA_BASE (data in $WORK)"
arca_dev_start "$ADIR" "$RESULTS/arca-cluster.log"
arca_dev_wait "$ADIR" "$RESULTS/arca-cluster.log" 180
echo "up: pids ${ARCA_NODE_PIDS[*]}, leader node $(arca_leader || echo none)"
THRESHOLD=$(jq -r .threshold "$ADIR/init.json")
mapfile -t SHARES < <(jq -r '.shares[]' "$ADIR/init.json")
arca_auth -f -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"data":{"value":"restart-probe"}}' \
  "$(arca_url 1)/v1/secret/data/restart-probe" || die "arca: writing secret/restart-probe failed"

# probe URL [curl args…]: "CODE SECONDS": the status code (000 if nothing answered) and how
# long this one request took.
probe() { local u=$1; shift; arca_curl -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 2 "$@" "$u" || true; }

# until_code T0 NAME REGEX URL [curl args…]: probe every POLL_S until the code matches (bounded
# by PHASE_LIMIT_S and by a probe count). Prints "MS LAST SEEN": the time since T0 in ms, how
# long the successful request itself took (ms: a node that holds a request until it can answer
# shows here), and the other answers before it, counted ("503x12/000x3", or "-").
until_code() {
  local t0=$1 name=$2 re=$3 url=$4 i code took; shift 4
  local -A seen=()
  local max_probes; max_probes=$(awk -v l="$PHASE_LIMIT_S" -v p="$POLL_S" 'BEGIN { printf "%d", l / p }')
  for ((i = 0; i < max_probes; i++)); do
    read -r code took < <(probe "$url" "$@")
    if [[ $code =~ ^($re)$ ]]; then
      local ms summary="" c; ms=$(elapsed_ms "$t0" "$(now)")
      for c in "${!seen[@]}"; do summary+="${summary:+/}${c}x${seen[$c]}"; done
      echo "$ms $(awk -v t="$took" 'BEGIN { printf "%.0f", t * 1000 }') ${summary:--}"
      return 0
    fi
    seen[$code]=$((${seen[$code]:-0} + 1))
    (($(elapsed_ms "$t0" "$(now)") > PHASE_LIMIT_S * 1000)) && break
    sleep "$POLL_S"
  done
  echo "$name: no $re within ${PHASE_LIMIT_S}s (last $code)" >&2
  return 1
}

echo "round,node,old_pid,new_pid,leader_before,leader_after,listen_ms,unsealed_ms,first_read_ms,first_read_request_ms,read_answers_before" > "$CSV"
TOTALS=()
for r in $(seq 1 "$ROUNDS"); do
  # A leader to tell the followers by (a restart may have set off an election: wait, bounded).
  leader=
  for _ in $(seq 1 100); do leader=$(arca_leader) && break; sleep 0.1; done
  [[ -n $leader ]] || die "round $r: no leader within 10 s"
  if ((LOAD_S > 0)); then
    BENCH_TOKEN=$ARCA_TOKEN BENCH_PATH=/v1/secret/data/restart-probe \
      wrk -t2 -c64 -d"${LOAD_S}s" -s "$HERE/kv_read.lua" "$(arca_url "$leader")/" > "$RESULTS/load-$r.txt" 2>&1 ||
      die "round $r: the load run failed (see $RESULTS/load-$r.txt)"
  fi
  followers=(); for n in 1 2 3; do [[ $n != "$leader" ]] && followers+=("$n"); done
  v=${followers[$(((r - 1) % ${#followers[@]}))]}   # alternate between the two followers
  old=${ARCA_NODE_PIDS[v]}
  owned "$old" "$ARCA" || die "round $r: pid $old of node $v is not an arca process"
  kill -KILL "$old"
  for _ in $(seq 1 200); do exited "$old" && break; sleep 0.05; done
  exited "$old" || die "round $r: pid $old survived SIGKILL for 10 s"
  # Its ports close with the process. Start it again (in this shell: see PDEATH in lib.sh).
  t0=$(now)
  "${PDEATH[@]}" "$ARCA" server --config "$ADIR/node$v/node.toml" >> "$ADIR/node$v-restart.log" 2>&1 &
  ARCA_NODE_PIDS[v]=$!
  RESTARTED+=("$!")
  disown "$!"   # its kill -9 in a later round is expected: no "Killed" job notice
  url=$(arca_url "$v")
  # Sealed and listening: seal-status answers 200 (unauthenticated, not audited, not limited).
  read -r listen _ _ < <(until_code "$t0" "node$v listener" 200 "$url/v1/sys/seal-status") || die "round $r failed"
  for ((k = 0; k < THRESHOLD; k++)); do
    sealed=$(arca_curl -X PUT -d "{\"key\":\"${SHARES[k]}\"}" "$url/v1/sys/unseal" | jq -r '.sealed' 2>/dev/null || echo error)
    [[ $sealed == false ]] && break
  done
  [[ $sealed == false ]] || die "round $r: node $v still sealed after $THRESHOLD shares (last answer: $sealed)"
  unsealed=$(elapsed_ms "$t0" "$(now)")
  read -r read_ms last before < <(until_code "$t0" "node$v first read" 200 "$url/v1/secret/data/restart-probe" \
    -H "X-Vault-Token: $ARCA_TOKEN") || die "round $r failed"
  after=$(arca_leader || echo none)
  echo "$r,$v,$old,${ARCA_NODE_PIDS[v]},$leader,$after,$listen,$unsealed,$read_ms,$last,$before" >> "$CSV"
  printf 'round %2d: node %s (leader %s -> %s): listening %5s ms, unsealed %5s ms, first read %5s ms (that request took %s ms; answers before it: %s)\n' \
    "$r" "$v" "$leader" "$after" "$listen" "$unsealed" "$read_ms" "$last" "$before"
  TOTALS+=("$read_ms")
  sleep "$SETTLE"
done

max=$(printf '%s\n' "${TOTALS[@]}" | sort -n | tail -1)
echo
echo "restart -> first read (ms), $ROUNDS rounds: ${TOTALS[*]}"
echo "max: $max ms"
{ echo "restart -> first read (ms): ${TOTALS[*]}"; echo "max: $max ms"; } > "$RESULTS/summary.txt"
