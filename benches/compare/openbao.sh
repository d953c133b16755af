# shellcheck shell=bash
# OpenBao 3-node Raft cluster on 127.0.0.1 with HTTPS listeners and the file audit device
# (sourced by run.sh, after lib.sh). Adapted from the team's bench-anchors harness, which
# found the pitfalls handled here (see README.md, "Pitfalls").
#
# Needs: BAO (the real Go binary), BAO_DIR (an empty data directory), BAO_BASE (API port of
# node 1; node N listens on BAO_BASE + 10(N-1), its cluster port one above).
# Sets: BAO_PIDS[1..3], BAO_TOKEN.

BAO_PIDS=()
BAO_TOKEN=

bao_port() { node_port "$BAO_BASE" "$1"; }
bao_url() { echo "https://127.0.0.1:$(bao_port "$1")"; }
bao_ports() { node_ports "$BAO_BASE"; }
# curl trusting only our throwaway CA (--cacert beats a CURL_CA_BUNDLE from the environment).
bao_curl() { curl -s --max-time 5 --cacert "$BAO_DIR/tls/ca.pem" "$@"; }
bao_auth() { bao_curl -H "X-Vault-Token: $BAO_TOKEN" "$@"; }

# Health code: 200 active, 429 standby, 501 not initialized, 503 sealed, 000 not answering.
bao_health() { bao_curl -o /dev/null -w '%{http_code}' --max-time 1 "$(bao_url "$1")/v1/sys/health" || true; }

# bao_wait_health NODE REGEX TIMEOUT_S
bao_wait_health() {
  local n=$1 re=$2 to=$3 t0 code; t0=$(date +%s)
  while :; do
    code=$(bao_health "$n")
    [[ $code =~ ^($re)$ ]] && return 0
    (($(date +%s) - t0 > to)) && { echo "openbao node$n: health $code after ${to}s (wanted $re)" >&2; return 1; }
    sleep 0.05
  done
}

# The node answering 200 (active); fails if none does.
bao_active() { local n; for n in 1 2 3; do [[ $(bao_health $n) == 200 ]] && { echo $n; return 0; }; done; return 1; }

# A fresh throwaway CA (ECDSA P-256) and one server certificate for 127.0.0.1 and localhost,
# like Arca's dev certificates (rcgen's default key is ECDSA P-256 too).
bao_tls() {
  local d=$BAO_DIR/tls ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  mkdir -p "$d"
  openssl req -x509 "${ec[@]}" -days 7 -subj "/CN=arca-compare throwaway CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req "${ec[@]}" -subj "/CN=localhost" -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 7 \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n') \
    -out "$d/server.pem" 2>/dev/null
  openssl verify -CAfile "$d/ca.pem" "$d/server.pem" >/dev/null
}

# Node N's config. retry_join names the other two nodes' API addresses and trusts our CA for
# them; the cluster port (Raft, request forwarding) is mTLS with OpenBao's own certificates.
# Raft timing stays at OpenBao's default (performance_multiplier 5). No disable_mlock: OpenBao
# 2.x dropped mlock and warns about the key.
bao_config() {
  local n=$1 m dir=$BAO_DIR/node$1 tls=$BAO_DIR/tls
  mkdir -p "$dir/raft"
  {
    echo "storage \"raft\" {"
    echo "  path    = \"$dir/raft\""
    echo "  node_id = \"node$n\""
    for m in 1 2 3; do
      [[ $m == "$n" ]] && continue
      echo "  retry_join { leader_api_addr = \"$(bao_url $m)\" leader_ca_cert_file = \"$tls/ca.pem\" }"
    done
    echo "}"
    cat <<EOC
listener "tcp" {
  address         = "127.0.0.1:$(bao_port "$n")"
  cluster_address = "127.0.0.1:$(($(bao_port "$n") + 1))"
  tls_cert_file   = "$tls/server.pem"
  tls_key_file    = "$tls/server.key"
}
api_addr     = "$(bao_url "$n")"
cluster_addr = "https://127.0.0.1:$(($(bao_port "$n") + 1))"
ui           = false
log_level    = "warn"
EOC
  } > "$dir/config.hcl"
}

# Must run in the main shell (see PDEATH in lib.sh).
bao_start() {
  local n=$1
  "${PDEATH[@]}" "$BAO" server -config="$BAO_DIR/node$n/config.hcl" > "$BAO_DIR/node$n/server.log" 2>&1 &
  BAO_PIDS[n]=$!
  echo "${BAO_PIDS[n]}" > "$BAO_DIR/node$n/pid"
}

# The first 3 of the 5 unseal keys, over the HTTP API (no CLI process per key).
bao_unseal() {
  local n=$1 k
  for k in $(jq -r '.keys_base64[0:3][]' "$BAO_DIR/init.json"); do
    bao_curl --max-time 30 -X PUT -d "{\"key\":\"$k\"}" "$(bao_url "$n")/v1/sys/unseal" > /dev/null || true
  done
}

bao_voters() {
  bao_auth "$(bao_url 1)/v1/sys/storage/raft/configuration" 2>/dev/null \
    | jq '[.data.config.servers[] | select(.voter)] | length' 2>/dev/null || echo 0
}

# OpenBao >= 2.4 refuses `audit enable` over the API ("use declarative, config-based audit
# device management") unless unsafe_allow_api_audit_creation is set. So: append the stanza to
# every node's config and SIGHUP it; the active node creates the device. One log file for the
# cluster (standbys that serve reads audit them into it too; O_APPEND keeps lines whole).
bao_audit_on() {
  local n t0
  for n in 1 2 3; do
    cat >> "$BAO_DIR/node$n/config.hcl" <<EOC
audit "file" "file" {
  options {
    file_path = "$BAO_DIR/audit.log"
  }
}
EOC
    kill -HUP "${BAO_PIDS[n]}"
  done
  t0=$(date +%s)
  until bao_auth "$(bao_url 1)/v1/sys/audit" | jq -e '.data["file/"] // .["file/"]' > /dev/null 2>&1; do
    (($(date +%s) - t0 > 30)) && die "openbao: the file audit device did not appear within 30 s after SIGHUP"
    sleep 0.2
  done
}

# bao_up BODY: start, init (5 shares, threshold 3), unseal, wait for 3 voters, KV v2 at
# secret/, audit on, and write secret/bench-key with BODY. Every wait is bounded.
bao_up() {
  local body=$1 n t0 t_start
  t_start=$(now)
  bao_tls
  for n in 1 2 3; do bao_config $n; bao_start $n; done
  bao_wait_health 1 501 60 || die "openbao node1 did not come up (log: $BAO_DIR/node1/server.log)"
  # Init generates keys and bootstraps Raft (fsyncs): on a busy box it takes seconds.
  bao_curl --max-time 60 -X PUT -d '{"secret_shares":5,"secret_threshold":3}' "$(bao_url 1)/v1/sys/init" > "$BAO_DIR/init.json" \
    || die "openbao: init failed or took over 60 s (log: $BAO_DIR/node1/server.log)"
  BAO_TOKEN=$(jq -r .root_token "$BAO_DIR/init.json")
  [[ -n $BAO_TOKEN && $BAO_TOKEN != null ]] || die "openbao init failed: $(cat "$BAO_DIR/init.json")"
  bao_unseal 1
  bao_wait_health 1 200 60 || die "openbao node1 not active after unseal"
  for n in 2 3; do
    # retry_join: the follower reports initialized once it has joined; with Shamir it then
    # still needs the unseal keys.
    t0=$(date +%s)
    until [[ $(bao_curl --max-time 1 "$(bao_url $n)/v1/sys/seal-status" | jq -r '.initialized // false' 2>/dev/null) == true ]]; do
      (($(date +%s) - t0 > 60)) && die "openbao node$n never joined"
      sleep 0.1
    done
    bao_unseal $n
    bao_wait_health $n '429|472|473' 60 || { sleep 1; bao_unseal $n; bao_wait_health $n '429|472|473' 60; } \
      || die "openbao node$n not a standby after unseal"
  done
  # Joined followers start as non-voters; autopilot promotes them after server_stabilization_time
  # (10 s), ~30 s after start. Before that a write commits on the leader's own fsync alone.
  t0=$(date +%s)
  until [[ $(bao_voters) == 3 ]]; do
    (($(date +%s) - t0 > 120)) && die "openbao followers not promoted to voters within 120 s"
    sleep 1
  done
  bao_auth -f --max-time 30 -X POST -d '{"type":"kv","options":{"version":"2"}}' "$(bao_url 1)/v1/sys/mounts/secret" > /dev/null \
    || die "openbao: enabling KV v2 at secret/ failed"
  bao_audit_on
  # The KV v2 mount finishes its setup asynchronously: retry the first write.
  for _ in $(seq 1 100); do
    bao_auth -f -o /dev/null -X POST -d "$body" "$(bao_url 1)/v1/secret/data/bench-key" && break
    sleep 0.1
  done
  # Every node must serve the key before a cell starts: a standby answers reads from its own
  # replica, and right after setup it may not have the mount or the key yet (seen: hundreds of
  # non-2xx in a first read cell through a standby).
  for n in 1 2 3; do
    for _ in $(seq 1 300); do
      bao_auth -f "$(bao_url $n)/v1/secret/data/bench-key" 2>/dev/null | jq -e '.data.data.value' > /dev/null && continue 2
      sleep 0.1
    done
    die "openbao: node$n does not serve secret/bench-key 30 s after setup"
  done
  echo "openbao: 3 voters, KV v2, file audit on, after $(elapsed_ms "$t_start" "$(now)") ms;" \
    "active node $(bao_active || echo none); pids ${BAO_PIDS[*]}"
}

bao_stop() {
  ((${#BAO_PIDS[@]} > 0)) || return 0
  stop_pids "$BAO" 15 "${BAO_PIDS[@]}"
}
