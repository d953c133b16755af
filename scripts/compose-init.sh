#!/usr/bin/env bash
# Initializes and unseals the docker-compose cluster in one go, for a first try.
#
#   docker compose up -d && ./scripts/compose-init.sh
#   COMPOSE=podman-compose ./scripts/compose-init.sh        # the same with podman
#
# Writes ./arca-compose-init.json (unseal shares and root token, mode 0600: a convenience for a
# trial cluster; a production cluster hands each share to a different person) and ./arca-ca.pem,
# then prints the environment for the host CLI. Run against an initialized cluster (say after
# `down` and `up`), it unseals every node with the shares saved by the first run.
set -euo pipefail

compose=(${COMPOSE:-docker compose})
nodes=(node1 node2 node3)
init_file=${ARCA_COMPOSE_INIT:-./arca-compose-init.json}

in_node() { "${compose[@]}" exec -T "$1" "${@:2}"; }
# podman-compose prints its own progress lines on stdout; keep only the JSON object / the PEM.
json_only() { sed -n '/^{/,/^}/p'; }
pem_only() { sed -n '/-----BEGIN/,/-----END/p'; }
status() { in_node "$1" arca status --format json 2>/dev/null | json_only; }
# Whether node $1's status contains $2. The status is read whole first: `grep -q` stops reading
# early, which under pipefail would turn a match into a failed pipeline.
has() { local st; st=$(status "$1" || true); grep -q "$2" <<<"$st"; }

# Waits up to $3 seconds for node $1's status to contain $2.
wait_has() { for _ in $(seq 1 "$3"); do has "$1" "$2" && return 0; sleep 1; done; has "$1" "$2"; }

# Every node serves `arca status` (sealed or not) once its process is up.
for n in "${nodes[@]}"; do
  wait_has "$n" '"node_id"' 60 || { echo "error: $n does not answer 'arca status'" >&2; exit 1; }
done

if has node1 '"initialized": false'; then
  umask 077
  in_node node1 arca operator init --format json | json_only > "$init_file.tmp"
  mv "$init_file.tmp" "$init_file"
  echo "initialized; shares and root token in $init_file"
elif [ ! -s "$init_file" ]; then
  echo "error: the cluster is initialized but $init_file is missing; unseal with 'arca operator unseal'" >&2
  exit 1
fi

json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$init_file"; }
threshold=$(json . 'd["threshold"]')
for n in "${nodes[@]}"; do
  # A joining node has nothing to unseal until the leader has replicated the cluster's state to
  # it. That can take a while after `up`: podman's DNS (aardvark-dns 1.4) was seen failing to
  # resolve a just-started container's name for about 25 s, and the leader cannot reach the
  # node until it does.
  if ! has "$n" '"initialized": true'; then
    echo "waiting for $n to receive the cluster's state (joining)..." >&2
    wait_has "$n" '"initialized": true' 120 || { echo "error: $n has not received the cluster's state in 120 s; see its log ('${compose[*]} logs $n'): is it running, and can the leader reach it by name?" >&2; exit 1; }
  fi
  for i in $(seq 0 $((threshold - 1))); do
    share=$(json . "d['shares'][$i]")
    # The share goes in on stdin, not the command line, so it stays out of process listings.
    if ! has "$n" '"sealed": true'; then break; fi
    printf '%s\n' "$share" | in_node "$n" arca operator unseal >/dev/null
  done
  has "$n" '"sealed": false' || { echo "error: $n is still sealed" >&2; exit 1; }
  echo "$n unsealed"
done

in_node node1 cat /certs/ca.pem | pem_only > ./arca-ca.pem
cat <<ENV
export ARCA_ADDR=https://127.0.0.1:8200 ARCA_CACERT=$PWD/arca-ca.pem ARCA_TOKEN=$(json . 'd["root_token"]')
ENV
