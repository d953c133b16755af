#!/usr/bin/env bash
# The sidecar example of docker-compose.yml: provisions what its `arca agent` logs in with (a
# policy reading one secret, an AppRole, the role id and a secret id written into the agent's
# volume through `exec`, never onto the host's disk), writes the example secret, and starts the
# agent and the application container.
#
#   ./scripts/compose-init.sh && eval "$(./scripts/compose-init.sh | grep ^export)"
#   ./scripts/compose-agent-example.sh           # COMPOSE=podman-compose for podman
#
# Needs the host CLI (ARCA_BIN, default `arca`) with the environment compose-init.sh prints.
set -euo pipefail

compose=(${COMPOSE:-docker compose})
arca=${ARCA_BIN:-arca}
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

"$arca" kv put app/example-db username=app password="$(head -c 18 /dev/urandom | base64)" >/dev/null
policy=$(mktemp)
trap 'rm -f "$policy"' EXIT
echo 'path "secret/data/app/example-db" { capabilities = ["read"] }' >"$policy"
"$arca" policy write app-agent "$policy" >/dev/null
"$arca" approle role write app-agent --policies app-agent --token-ttl 1h --token-max-ttl 24h >/dev/null
role_id=$("$arca" approle role-id app-agent --format json | field role_id)
secret_id=$("$arca" approle secret-id app-agent --format json | field secret_id)

"${compose[@]}" up -d app-agent app >/dev/null 2>&1
in_agent() { "${compose[@]}" exec -T app-agent "$@"; }
for _ in $(seq 1 30); do
  in_agent true >/dev/null 2>&1 && break
  sleep 1
done
# Through stdin: the ids stay off command lines. The secret id first: the agent starts once the
# role id is there.
printf %s "$secret_id" | in_agent sh -c 'umask 077; cat >/agent-auth/secret-id.tmp && mv /agent-auth/secret-id.tmp /agent-auth/secret-id'
printf %s "$role_id" | in_agent sh -c 'umask 077; cat >/agent-auth/role-id.tmp && mv /agent-auth/role-id.tmp /agent-auth/role-id'
echo "the agent renders /rendered/app.env for the app container: '${compose[*]} logs app' shows it in use;"
echo "'$arca kv put app/example-db username=app password=…' reaches the file within a second"
