#!/usr/bin/env bash
# The docker-compose cluster, run for real with podman-compose: builds the image (the binary from
# the host fed to the Dockerfile's runtime stage, the Dockerfile itself unchanged), brings the
# three nodes up, initializes and unseals them through `exec` (scripts/compose-init.sh), round-trips
# a secret from the host through the published ports with the host CLI, kills a node and keeps
# serving, restarts and unseals it, checks that `down` + `up` keeps the (sealed) data, and tears
# everything down with `down -v` whatever happens.
#
#   tests/compose/compose_test.sh [path/to/arca]     (default: $CARGO_TARGET_DIR/debug/arca)
#
# Needs root (podman with its default storage), podman, podman-compose, runc, netavark,
# aardvark-dns and debootstrap (installed by scripts/test.sh). The Debian base image is made
# locally with debootstrap: no image registry is needed.
set -euo pipefail

# podman's default (rootful) storage and networking: re-run as root when started by a user.
if [ "$(id -u)" -ne 0 ]; then
  exec sudo -E "$0" "$(realpath "${1:-${CARGO_TARGET_DIR:-$(dirname "$0")/../../target}/debug/arca}")"
fi

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
host_arca=$(realpath "${1:-$target/debug/arca}")
project=arca-compose-test
work=$(mktemp -d "${TMPDIR:-/tmp}/arca-compose.XXXXXX")
compose=(podman-compose -p "$project")
export COMPOSE="${compose[*]}" ARCA_COMPOSE_INIT=$work/init.json

step() { printf '\n=== %s\n' "$*"; }
# Whether `arca status` on the node at port $1 contains $2 (read whole first: see compose-init.sh).
status_has() { local st; st=$(ARCA_ADDR=https://127.0.0.1:$1 "$host_arca" status --format json 2>/dev/null || true); grep -q "$2" <<<"$st"; }
# Waits up to 60 s for `status_has $1 $2`.
wait_status() { for _ in $(seq 1 60); do status_has "$1" "$2" && return 0; sleep 1; done; return 1; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# podman without systemd, with the runc/cgroupfs setup this kernel needs.
printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n[network]\nnetwork_backend = "netavark"\n' \
  > "$work/containers.conf"
export CONTAINERS_CONF=$work/containers.conf

volumes_before=$(podman volume ls -q | sort)

teardown() {
  local status=$?
  if [ $status -ne 0 ]; then
    echo "--- node logs (last 30 lines each) ---" >&2
    for n in node1 node2 node3; do podman logs --tail 30 "${project}_${n}_1" >&2 2>&1 || true; done
  fi
  step "teardown: down -v"
  # Containers with their anonymous volumes first (podman-compose's down does not remove those).
  podman ps -aq --filter "label=io.podman.compose.project=$project" | xargs -r podman rm -f -v >/dev/null 2>&1 || true
  "${compose[@]}" down -v >/dev/null 2>&1 || true
  podman volume rm -f "${project}_ca" "${project}_client-ca" "${project}_agent-auth" "${project}_rendered" "${project}_node1-certs" "${project}_node2-certs" "${project}_node3-certs" "${project}_node1-data" "${project}_node2-data" "${project}_node3-data" >/dev/null 2>&1 || true
  # Anonymous volumes (the image's VOLUME) of containers that `down` without -v removed.
  comm -13 <(echo "$volumes_before") <(podman volume ls -q | sort) | xargs -r podman volume rm -f >/dev/null 2>&1 || true
  rm -rf "$work" "$root/arca-ca.pem"
  exit $status
}
trap teardown EXIT

step "base image debian:bookworm-slim (debootstrap, offline from any registry)"
if ! podman image exists docker.io/library/debian:bookworm-slim; then
  # The mirror apt already uses: an active `URIs:` (deb822) or `deb` line, not a comment.
  mirror=$( (grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) \
    | grep -oE 'https?://[^ ]*debian/?$|https?://[^ ]*debian ' | grep -v security | head -1 | tr -d ' ' || true)
  debootstrap --variant=minbase --include=ca-certificates bookworm "$work/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
  tar -C "$work/rootfs" -c . | podman import - docker.io/library/debian:bookworm-slim >/dev/null
  rm -rf "$work/rootfs"
fi

step "image arca:latest from the Dockerfile, binary from the host"
mkdir -p "$work/builder/usr/local/bin"
strip -o "$work/builder/usr/local/bin/arca" "$host_arca"
podman build --format docker --build-context "builder=$work/builder" -t arca:latest . >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; fail "podman build"; }
podman run --rm arca:latest --version
[ "$(podman run --rm --entrypoint id arca:latest -u)" = 10001 ] || fail "the image does not run as the arca user"

step "up"
"${compose[@]}" down -v >/dev/null 2>&1 || true
# The cluster's services by name: podman-compose 1.0 ignores `profiles`, and would start the
# sidecar example too. Its containers joining the network while the nodes elect a leader made
# node-to-node calls time out for seconds (aardvark-dns reloads), and `operator init` with them.
cluster=(certs node1 node2 node3)
"${compose[@]}" up -d "${cluster[@]}" >"$work/up.log" 2>&1 || { tail -30 "$work/up.log"; fail "podman-compose up"; }

step "no node container holds a CA private key or another node's key"
for n in node1 node2 node3; do
  files=$(podman exec "${project}_${n}_1" ls /certs)
  grep -q 'ca-key' <<<"$files" && fail "$n can read a CA private key: $files"
  for m in node1 node2 node3; do
    [ "$m" = "$n" ] && continue
    grep -q "^$m" <<<"$files" && fail "$n holds $m's files: $files"
  done
  grep -qx "$n-cluster-key.pem" <<<"$files" || fail "$n lacks its cluster key: $files"
done

step "init and unseal through exec"
init_out=$(scripts/compose-init.sh)
eval "$(grep '^export ' <<<"$init_out")"
export ARCA_CACERT=$root/arca-ca.pem

step "round trip from the host through the published ports"
"$host_arca" kv put app/db password=from-host >/dev/null
for port in 8200 8210 8220; do
  got=$(ARCA_ADDR=https://127.0.0.1:$port "$host_arca" kv get --field password app/db)
  [ "$got" = from-host ] || fail "port $port read '$got'"
done

step "sidecar example: the agent renders a file the app container reads, and again on a change"
ARCA_BIN=$host_arca scripts/compose-agent-example.sh >/dev/null
rendered() { podman exec "${project}_app_1" cat /rendered/app.env 2>/dev/null || true; }
# Waits up to $2 half-seconds for the rendered file to hold line $1.
wait_rendered() { for _ in $(seq 1 "$2"); do grep -qx "$1" <<<"$(rendered)" && return 0; sleep 0.5; done; return 1; }
wait_rendered 'DB_USER=app' 120 || { podman logs --tail 30 "${project}_app-agent_1" >&2 || true; fail "the agent rendered no file"; }
"$host_arca" kv put app/example-db username=app password=changed-in-compose >/dev/null
wait_rendered 'DB_PASSWORD=changed-in-compose' 20 || fail "the change did not reach the rendered file"
for _ in $(seq 1 20); do podman logs "${project}_app_1" 2>&1 | grep -q 'app: connecting as app' && break; sleep 1; done
podman logs "${project}_app_1" 2>&1 | grep -q 'app: connecting as app' || fail "the app did not read the rendered file"
podman logs "${project}_app-agent_1" 2>&1 | grep -q 'changed-in-compose' && fail "the agent logged a secret value"

step "kill node3: the others still read and write"
podman kill "${project}_node3_1" >/dev/null
"$host_arca" kv put app/db password=while-node3-down >/dev/null
[ "$(ARCA_ADDR=https://127.0.0.1:8210 "$host_arca" kv get --field password app/db)" = while-node3-down ] \
  || fail "read after the kill"

step "restart node3: it comes back sealed, is unsealed, and has the write it missed"
"${compose[@]}" start node3 >/dev/null 2>&1 || podman start "${project}_node3_1" >/dev/null
wait_status 8220 '"sealed": true' || fail "node3 not back sealed"
scripts/compose-init.sh >/dev/null
# Retried only while node3 refuses (still starting): its first answer must be the new value,
# since every read passes the read barrier (an old value here is a stale read, not slowness).
got=""
for _ in $(seq 1 30); do
  if got=$(ARCA_ADDR=https://127.0.0.1:8220 "$host_arca" kv get --field password app/db 2>/dev/null); then break; fi
  sleep 1
done
[ "$got" = while-node3-down ] || fail "node3's first answer after catching up was '$got'"

step "down and up without -v: the data stays, the nodes come back sealed"
"${compose[@]}" down >/dev/null 2>&1
"${compose[@]}" up -d "${cluster[@]}" >"$work/up2.log" 2>&1 || { tail -30 "$work/up2.log"; fail "second up"; }
wait_status 8200 '"initialized": true' || fail "node1 did not come back after down/up"
status_has 8200 '"sealed": true' || fail "node1 not sealed after up"
scripts/compose-init.sh >/dev/null
[ "$("$host_arca" kv get --field password app/db)" = while-node3-down ] || fail "data lost across down/up"

step "compose test passed"
