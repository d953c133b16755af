#!/usr/bin/env bash
# Installs (if missing, with apt) and starts a local PostgreSQL for the rotation tests, listening on
# loopback only, and creates the test admin role the tests use to create their own roles.
# Idempotent. Needs root (apt, pg_ctlcluster); re-runs itself with sudo when started by a user.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then exec sudo -E "$0" "$@"; fi

"$(dirname "$0")/ensure-apt-packages.sh" postgresql
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
# Read whole before testing (grep -q on a pipe can fail the pipeline under pipefail).
clusters=$(pg_lsclusters -h)
if [ -z "$(awk -v v="$version" '$1 == v && $2 == "main"' <<<"$clusters")" ]; then
    pg_createcluster "$version" main >/dev/null
fi
conf=/etc/postgresql/$version/main/postgresql.conf
grep -q "^listen_addresses = 'localhost'" "$conf" || echo "listen_addresses = 'localhost'" >>"$conf"
pg_ctlcluster "$version" main start >/dev/null 2>&1 || pg_ctlcluster "$version" main status >/dev/null
for _ in $(seq 1 30); do
    su postgres -c "psql -q -c 'select 1'" >/dev/null 2>&1 && break
    sleep 1
done
# The tests log in over TCP on 127.0.0.1 with this role (scram-sha-256 is the default for
# host connections); it exists only for them.
su postgres -c "psql -q -v ON_ERROR_STOP=1" <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'arca_test_admin') THEN
    CREATE ROLE arca_test_admin LOGIN SUPERUSER PASSWORD 'arca-test-admin';
  END IF;
END $$;
SQL
echo "postgresql $version ready on 127.0.0.1:5432 (role arca_test_admin)"
