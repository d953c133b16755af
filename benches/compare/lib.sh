# shellcheck shell=bash
# Helpers shared by run.sh and restart.sh (sourced, not run): clocks, process bookkeeping
# (start, check and stop by recorded PID only), CPU sampling and the wrk runner.

# Loopback only: a proxy taken from the environment must never carry benchmark traffic.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY || true
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

NCPU=$(nproc)
HZ=$(getconf CLK_TCK)

die() { echo "error: $*" >&2; exit 1; }
log() { echo "== $(date +%H:%M:%S) $*"; }
now() { date +%s.%N; }
elapsed_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# Both systems lay out three nodes alike: node N's API on BASE + 10(N-1), its cluster port one
# above. node_port BASE N; node_ports BASE (every port of the three, for ports_free).
node_port() { echo $(($1 + ($2 - 1) * 10)); }
node_ports() { local n p; for n in 1 2 3; do p=$(node_port "$1" $n); echo "$p $((p + 1))"; done; }

# The start of every cleanup trap: once only, no more ERR traps or -e, and a second Ctrl-C
# must not cut it short. Returns 1 when cleanup already ran.
cleanup_once() {
  ((CLEANED)) && return 1
  CLEANED=1
  set +e; trap - ERR
  trap '' INT TERM HUP
}

# The end of every cleanup trap: names any PID still alive, then keeps or removes $WORK.
cleanup_report() {
  local p left=()
  for p in "$@"; do alive "$p" && left+=("$p"); done
  ((${#left[@]} > 0)) && echo "WARNING: still running after cleanup: ${left[*]}"
  if [[ $KEEP_DATA == 1 ]]; then echo "data kept in $WORK"; else rm -rf "$WORK"; fi
  echo "results: $RESULTS"
}

# Every server is started through `setpriv --pdeathsig TERM` when util-linux has it: the
# process gets SIGTERM if the script that started it dies, even by SIGKILL, when no trap
# runs. (`arca dev cluster` does the same for its own nodes.) Starts must happen in the main
# shell, never inside $(…) or a pipeline: the parent whose death counts is the forking shell.
PDEATH=()
command -v setpriv >/dev/null 2>&1 && PDEATH=(setpriv --pdeathsig TERM --)

# One process's /proc/PID/stat fields after "comm)" (comm may contain spaces); fails if gone.
stat_fields() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; echo "${s##*) }"; }

# Running: present and not a zombie. A child we killed stays a zombie until reaped, so a plain
# `kill -0` would call it alive.
alive() { local f; f=$(stat_fields "$1") || return 1; [[ ${f%% *} != Z ]]; }

# Whether every thread of PID has exited. After a SIGKILL the main thread can show Z while
# other threads still exit, and the files they share (a node's RocksDB LOCK) close only with
# the last of them: a node started again before that cannot open its data directory.
exited() {
  local t s
  for t in /proc/"$1"/task/*/stat; do
    s=$(cat "$t" 2>/dev/null) || continue
    [[ ${s##*) } == Z* ]] || return 1
  done
}

# Whether PID runs EXE (or is still the setpriv about to exec it). Guards every kill against
# a PID reused by an unrelated process. " (deleted)": the binary was rebuilt while running.
owned() {
  local exe; exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [[ $exe == "$(readlink -f "$2")" ]] && return 0
  [[ ${#PDEATH[@]} -gt 0 && $exe == "$(readlink -f "$(command -v setpriv)")" ]]
}

# stop_pids EXE GRACE_S PID...: SIGTERM those of the PIDs that still run EXE, wait up to
# GRACE_S seconds for them to exit, then SIGKILL what is left. Only the given PIDs.
stop_pids() {
  local exe=$1 grace=$2 p i left; shift 2
  local pids=()
  for p in "$@"; do [[ -n $p ]] && alive "$p" && owned "$p" "$exe" && pids+=("$p"); done
  [[ ${#pids[@]} -eq 0 ]] && return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    left=0; for p in "${pids[@]}"; do alive "$p" && left=1; done
    [[ $left == 0 ]] && return 0
    sleep 0.1
  done
  for p in "${pids[@]}"; do
    alive "$p" && owned "$p" "$exe" && { echo "pid $p ignored SIGTERM for ${grace}s: SIGKILL"; kill -KILL "$p" 2>/dev/null || true; }
  done
  return 0
}

# ports_free PORT...: fails naming the first port something already listens on.
ports_free() {
  local p
  for p in "$@"; do
    if [[ -n $(ss -ltnH "sport = :$p" 2>/dev/null) ]]; then echo "port $p is in use:"; ss -ltnpH "sport = :$p"; return 1; fi
  done
}

# ---- CPU sampling. All CPU figures are "% of one core": the box's maximum is NCPU × 100.

# Host busy and total jiffies from /proc/stat (busy = user nice system irq softirq steal).
host_busy() { awk '/^cpu /{ print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat; }
busy_pct() { awk -v a="$1" -v b="$2" -v n="$NCPU" 'BEGIN { printf "%.0f", (b > 0 ? a / b * 100 * n : 0) }'; }

# Sum of utime+stime (clock ticks) of the given PIDs; a PID that is gone counts 0.
ticks_of() {
  local s=0 p line fields
  for p in "$@"; do
    line=$(stat_fields "$p") || continue
    read -r -a fields <<< "$line"
    s=$((s + fields[11] + fields[12]))   # fields 14 and 15 of /proc/PID/stat (utime, stime)
  done
  echo "$s"
}

# Waits (up to QUIET_WAIT s) for host busy < QUIET_MAX % in a 1 s sample; prints the last
# sample. The box is shared: this keeps a cell from starting on top of someone's build, and
# the figure goes into the CSV (pre_busy) so a cell that started busy anyway can be spotted.
quiet_wait() {
  local t0 a0 b0 a1 b1 p; t0=$(date +%s)
  while :; do
    read -r a0 b0 < <(host_busy); sleep 1; read -r a1 b1 < <(host_busy)
    p=$(busy_pct $((a1 - a0)) $((b1 - b0)))
    if ((p < ${QUIET_MAX:-30})) || (($(date +%s) - t0 >= ${QUIET_WAIT:-30})); then echo "$p"; return; fi
  done
}

# ---- wrk

# wrk latency ("812.00us", "2.10ms", "1.02s", "1.10m") in milliseconds.
to_ms() {
  awk '{ v = $1
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0 }
    else if (v ~ /m$/) { sub(/m$/, "", v); print v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
    else print v }'
}

# One wrk output file -> "rps p50_ms p99_ms non2xx socket_errors".
wrk_stats() {
  local f=$1 rps p50 p99 non2xx errs
  rps=$(awk '/^Requests\/sec/ { print $2 }' "$f")
  p50=$(awk '$1 == "50%" { print $2 }' "$f" | to_ms)
  p99=$(awk '$1 == "99%" { print $2 }' "$f" | to_ms)
  non2xx=$(awk -F': *' '/Non-2xx/ { print $2 }' "$f")
  errs=$(awk '/Socket errors/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$f")
  echo "${rps:-0} ${p50:-0} ${p99:-0} ${non2xx:-0} ${errs:-0}"
}

CSV_HEADER="mode,system,op,conns,run,leader,targets,rps,p50_ms,p99_ms,non2xx,errors,wrk_cpu,srv_cpu,peer_cpu,other_cpu,pre_busy,audit_lines"
WRK_PIDS=()   # the wrk processes of the cell running now (cleanup stops them on Ctrl-C)

# run_cell MODE SYSTEM OP CONNS RUN LUA TOKEN CSV LEADER "URL..." "SRV_PID..." "PEER_PID..." [AUDIT_FILE]
#
# One measurement: CONNS connections for DUR seconds, split as evenly as possible over the
# URLs, one wrk process per URL that gets any (the first URLs get the remainder), all at once.
# With one URL wrk gets two threads (one if CONNS is 1); with several, one thread each, since
# three processes already keep both cores busy. Appends one CSV row:
#   rps: sum over the wrk processes; p50/p99: the worst of them (latency histograms cannot
#   be merged from wrk's text output, so the row keeps the conservative figure);
#   wrk_cpu: the wrk processes' user+sys over wall time; srv_cpu: the measured system's three
#   servers; peer_cpu: the other system's servers, idle meanwhile (should be near 0);
#   other_cpu: host busy minus all of these (foreign load, kernel I/O threads, arca dev
#   cluster's log forwarder); pre_busy: host busy in the 1 s sample before the run.
# AUDIT_FILE (OpenBao's file audit log) is emptied before the run and its lines counted after:
# two lines per audited request, so it shows the device was on for the cell.
run_cell() {
  local mode=$1 system=$2 op=$3 c=$4 run=$5 lua=$6 token=$7 csv=$8 leader=$9
  local -a urls srv peer
  read -r -a urls <<< "${10}"; read -r -a srv <<< "${11}"; read -r -a peer <<< "${12}"
  local audit=${13:-}
  local n=${#urls[@]} base rem i ci t tag out rc=0 pre real usr sys
  local s0 s1 q0 q1 hb0 ht0 hb1 ht1 audit_lines=""
  local -a outs=() ports=() st
  base=$((c / n)); rem=$((c % n))
  tag=${mode}_${system}_${op}_c${c}_run${run}
  mkdir -p "$RESULTS/raw"
  [[ -f $csv ]] || echo "$CSV_HEADER" > "$csv"
  [[ -n $audit && -f $audit ]] && : > "$audit"   # O_APPEND device: truncating keeps it small
  sleep 1; pre=$(quiet_wait)
  s0=$(ticks_of "${srv[@]}"); q0=$(ticks_of "${peer[@]}"); read -r hb0 ht0 < <(host_busy)
  local TIMEFORMAT='%R %U %S'
  # `time` on a group in this shell counts the CPU of the children it waited for: the wrks.
  { time {
    WRK_PIDS=()
    for i in "${!urls[@]}"; do
      ci=$((base + (i < rem ? 1 : 0)))
      ((ci > 0)) || continue
      t=1; ((n == 1 && ci >= 2)) && t=2
      out=$RESULTS/raw/${tag}_${urls[i]##*:}.txt
      outs+=("$out"); ports+=("${urls[i]##*:}")
      BENCH_TOKEN=$token BENCH_PREFIX="n$((i + 1))-" \
        "${PDEATH[@]}" wrk -t"$t" -c"$ci" -d"${DUR}s" --timeout 10s --latency -s "$lua" "${urls[i]}" > "$out" 2>&1 &
      WRK_PIDS+=("$!")
    done
    for i in "${WRK_PIDS[@]}"; do wait "$i" || rc=$?; done
  }; } 2> "$RESULTS/raw/$tag.time"
  WRK_PIDS=()
  s1=$(ticks_of "${srv[@]}"); q1=$(ticks_of "${peer[@]}"); read -r hb1 ht1 < <(host_busy)
  if ((rc != 0)); then cat "${outs[@]}" >&2; die "wrk failed (exit $rc) in cell $tag"; fi
  read -r real usr sys < "$RESULTS/raw/$tag.time"
  [[ -n $audit && -f $audit ]] && audit_lines=$(wc -l < "$audit")
  local rps=0 p50=0 p99=0 non2xx=0 errs=0
  for out in "${outs[@]}"; do
    read -r -a st <<< "$(wrk_stats "$out")"
    rps=$(awk -v a="$rps" -v b="${st[0]}" 'BEGIN { printf "%.2f", a + b }')
    p50=$(awk -v a="$p50" -v b="${st[1]}" 'BEGIN { print (b > a ? b : a) }')
    p99=$(awk -v a="$p99" -v b="${st[2]}" 'BEGIN { print (b > a ? b : a) }')
    non2xx=$((non2xx + st[3])); errs=$((errs + st[4]))
  done
  local wcpu scpu pcpu busy other
  wcpu=$(awk -v r="$real" -v u="$usr" -v s="$sys" 'BEGIN { printf "%.0f", (u + s) / r * 100 }')
  scpu=$(awk -v d="$((s1 - s0))" -v hz="$HZ" -v r="$real" 'BEGIN { printf "%.0f", d / hz / r * 100 }')
  pcpu=$(awk -v d="$((q1 - q0))" -v hz="$HZ" -v r="$real" 'BEGIN { printf "%.0f", d / hz / r * 100 }')
  busy=$(busy_pct $((hb1 - hb0)) $((ht1 - ht0)))
  other=$((busy - wcpu - scpu - pcpu)); ((other < 0)) && other=0
  local IFS=+
  echo "$mode,$system,$op,$c,$run,$leader,${ports[*]},$rps,$p50,$p99,$non2xx,$errs,$wcpu,$scpu,$pcpu,$other,$pre,$audit_lines" | tee -a "$csv"
}
