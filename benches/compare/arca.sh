# shellcheck shell=bash
# Arca 3-node cluster through `arca dev cluster` (sourced by run.sh and restart.sh, after lib.sh).
#
# `arca dev cluster --nodes 3 --dir DIR --base-port B` (src/cli/dev.rs) writes certificates and
# node configs (DIR/nodeN/node.toml), starts `arca server --config DIR/nodeN/node.toml` for each
# node as its own child (with PR_SET_PDEATHSIG SIGTERM), inits (5 shares, threshold 3 into
# DIR/init.json), unseals every node, waits until all are voters, and only then writes DIR/env
# (ARCA_ADDR, ARCA_CACERT, ARCA_TOKEN) and DIR/cluster.json (each node's id, api_addr, pid,
# config). It stays in the foreground; SIGTERM or SIGINT stops its nodes (SIGTERM, 10 s grace).
# Node N: API on B + 10(N-1), cluster port one above. It does not restart a node that dies.
#
# Needs: ARCA (the release binary), ARCA_BASE. Sets: ARCA_DEV_PID, ARCA_NODE_PIDS[1..3],
# ARCA_TOKEN, ARCA_CA.

ARCA_DEV_PID=
ARCA_NODE_PIDS=()
ARCA_TOKEN=
ARCA_CA=

arca_port() { node_port "$ARCA_BASE" "$1"; }
arca_url() { echo "https://127.0.0.1:$(arca_port "$1")"; }
arca_ports() { node_ports "$ARCA_BASE"; }
arca_curl() { curl -s --max-time 5 --cacert "$ARCA_CA" "$@"; }
arca_auth() { arca_curl -H "X-Vault-Token: $ARCA_TOKEN" "$@"; }

# Health code, Vault's: 200 leader, 429 follower, 503 sealed, 000 not answering.
arca_health() { arca_curl -o /dev/null -w '%{http_code}' --max-time 1 "$(arca_url "$1")/v1/sys/health" || true; }
arca_leader() { local n; for n in 1 2 3; do [[ $(arca_health $n) == 200 ]] && { echo $n; return 0; }; done; return 1; }

# Warns when Rust sources of the repo this script lives in are newer than the binary: the
# binary then measures older code than the work tree's HEAD (seen: a merge landed minutes after
# the release build had compiled the crate it changed). Prints the warning, or nothing.
arca_staleness() {
  local repo newer; repo=$(cd "$HERE/../.." && pwd)
  newer=$(find "$repo/src" "$repo/crates" -name '*.rs' -newer "$ARCA" 2>/dev/null | head -3 | sed "s|$repo/||" | tr '\n' ' ')
  [[ -n $newer ]] && echo "WARNING: sources newer than $ARCA (e.g. $newer): the binary may not be the work tree's code; rebuild to measure HEAD"
  return 0
}

# A value from DIR/env (`export NAME=value` lines), read rather than sourced: sourcing would
# also put the binary's directory on PATH.
arca_env_value() { sed -n "s/^export $2=//p" "$1/env"; }

# arca_dev_start DIR LOG: starts the dev cluster in the background. Must run in the main shell
# (see PDEATH in lib.sh): if this script dies, the dev cluster gets SIGTERM and stops its nodes.
arca_dev_start() {
  "${PDEATH[@]}" "$ARCA" dev cluster --nodes 3 --dir "$1" --base-port "$ARCA_BASE" > "$2" 2>&1 &
  ARCA_DEV_PID=$!
}

# arca_dev_wait DIR LOG TIMEOUT_S: until DIR/env and a complete DIR/cluster.json exist (they
# are written once every node is an unsealed voter). Fails early if the dev cluster exits.
arca_dev_wait() {
  local dir=$1 logf=$2 to=$3 t0; t0=$(date +%s)
  until [[ -s $dir/env ]] && [[ $(jq '.nodes | length' "$dir/cluster.json" 2>/dev/null) == 3 ]]; do
    alive "$ARCA_DEV_PID" || { tail -20 "$logf" >&2; die "arca dev cluster exited during startup (log: $logf)"; }
    (($(date +%s) - t0 > to)) && { tail -20 "$logf" >&2; die "arca dev cluster not up within ${to}s (log: $logf)"; }
    sleep 0.1
  done
  ARCA_TOKEN=$(arca_env_value "$dir" ARCA_TOKEN)
  ARCA_CA=$(arca_env_value "$dir" ARCA_CACERT)
  local n
  for n in 1 2 3; do ARCA_NODE_PIDS[n]=$(jq -r ".nodes[] | select(.id == $n) | .pid" "$dir/cluster.json"); done
  [[ -n $ARCA_TOKEN && -f $ARCA_CA ]] || die "arca: no token or CA in $dir/env"
}

# Stops the dev cluster (it stops its nodes gracefully), then anything left of the node PIDs
# it recorded, plus any restarted node PIDs given as arguments. Node PIDs are also taken from
# the dev cluster's children (pgrep -P: children of that one PID) in case cluster.json was
# never written.
arca_stop() {
  local p kids=()
  if [[ -n $ARCA_DEV_PID ]]; then
    while read -r p; do [[ -n $p ]] && kids+=("$p"); done < <(pgrep -P "$ARCA_DEV_PID" 2>/dev/null || true)
    stop_pids "$ARCA" 20 "$ARCA_DEV_PID"
  fi
  stop_pids "$ARCA" 15 "${ARCA_NODE_PIDS[@]}" "${kids[@]}" "$@"
}
