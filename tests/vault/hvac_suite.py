"""Vault compatibility: the unmodified `hvac` client (PyPI) against a real Arca cluster.

Run by tests/vault_http.rs, which starts a 3-node `arca dev cluster` and one more node that is
not initialized, and passes their addresses in the environment. Every check is a plain assert;
the first failure ends the run with a traceback and a non-zero exit.
"""

import os
import sys

import hvac
import requests
from hvac import exceptions

CA = os.environ["VAULT_CACERT"]
ADDR = os.environ["VAULT_ADDR"]  # node 1
NODE2 = os.environ["ARCA_NODE2_ADDR"]
FRESH = os.environ["ARCA_FRESH_ADDR"]  # a node that was never initialized
ROOT = os.environ["ARCA_ROOT_TOKEN"]
SHARES = os.environ["ARCA_SHARES"].split(",")


def client(url=ADDR, token=None):
    return hvac.Client(url=url, token=token, verify=CA)


def raises(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc as e:
        return e
    raise AssertionError(f"{fn.__name__} did not raise {exc.__name__}")


def health(url, **kwargs):
    return client(url).sys.read_health_status(method="GET", **kwargs)


def status_of(response):
    return response.status_code if isinstance(response, requests.Response) else 200


def step(name):
    print(f"-- {name}", flush=True)


def init_and_unseal():
    step("init and unseal a fresh node")
    fresh = client(FRESH)
    assert fresh.sys.is_initialized() is False
    assert status_of(health(FRESH)) == 501
    result = fresh.sys.initialize(secret_shares=3, secret_threshold=2)
    assert len(result["keys"]) == 3 and result["root_token"]
    assert fresh.sys.is_initialized() is True
    assert fresh.sys.is_sealed() is True
    assert status_of(health(FRESH)) == 503
    bad = raises(exceptions.InvalidRequest, fresh.sys.submit_unseal_key, "not-a-share")
    assert "share" in str(bad), bad
    progress = fresh.sys.submit_unseal_key(result["keys"][0])
    assert progress["sealed"] is True and progress["progress"] == 1 and progress["t"] == 2
    fresh.sys.submit_unseal_key(result["keys"][1])
    assert fresh.sys.is_sealed() is False
    # A single node is its own leader: active.
    for _ in range(100):
        if status_of(health(FRESH)) == 200:
            break
    assert status_of(health(FRESH)) == 200
    rooted = client(FRESH, result["root_token"])
    assert rooted.is_authenticated()


def health_of_cluster():
    step("sys/health on active, standby and sealed nodes")
    root = client(ADDR, ROOT)
    leader = root.sys.read_leader_status()
    assert leader["ha_enabled"] is True and leader["leader_address"].startswith("https://127.0.0.1:")
    standby = NODE2 if leader["leader_address"] != NODE2 else ADDR
    assert status_of(health(leader["leader_address"])) == 200
    assert status_of(health(standby)) == 429
    assert status_of(health(standby, standby_ok=True)) == 200
    assert status_of(health(standby, standby_code=299)) == 299
    # Seal the standby: 503, then unseal it with two shares.
    client(standby, ROOT).sys.seal()
    assert client(standby).sys.is_sealed() is True
    sealed = health(standby)
    assert status_of(sealed) == 503 and sealed.json()["sealed"] is True
    assert status_of(health(standby, sealed_code=200)) == 200
    client(standby).sys.submit_unseal_keys(SHARES)
    assert client(standby).sys.is_sealed() is False
    assert status_of(health(standby, standby_ok=True)) == 200


def kv_v2():
    step("KV v2: versions, CAS, patch, delete, undelete, destroy, metadata, list")
    c = client(ADDR, ROOT)
    kv = c.secrets.kv.v2
    mounts = c.sys.list_mounted_secrets_engines()
    assert mounts["data"]["secret/"]["options"]["version"] == "2"
    assert kv.read_configuration()["data"]["max_versions"] == 10
    # What the Vault CLI asks before every `vault kv` command.
    ui = requests.get(f"{ADDR}/v1/sys/internal/ui/mounts/secret/app/db", headers={"X-Vault-Token": ROOT}, verify=CA)
    assert ui.json()["data"]["path"] == "secret/" and ui.json()["data"]["options"]["version"] == "2", ui.text
    hashed = requests.post(
        f"{ADDR}/v1/sys/audit-hash/file", json={"input": "one"}, headers={"X-Vault-Token": ROOT}, verify=CA
    )
    assert hashed.json()["hash"].startswith("hmac-sha256:"), hashed.text

    v1 = kv.create_or_update_secret(path="app/db", secret={"user": "app", "password": "one"})
    assert v1["data"]["version"] == 1
    v2 = kv.create_or_update_secret(path="app/db", secret={"user": "app", "password": "two"}, cas=1)
    assert v2["data"]["version"] == 2
    # A CAS mismatch is 400, as in Vault (hvac raises InvalidRequest).
    bad = raises(exceptions.VaultError, kv.create_or_update_secret, path="app/db", secret={"x": "y"}, cas=1)
    assert "check-and-set" in str(bad), bad
    r = requests.post(
        f"{ADDR}/v1/secret/data/app/new",
        json={"data": {"x": "y"}, "options": {"cas": 5}},
        headers={"X-Vault-Token": ROOT},
        verify=CA,
    )
    assert r.status_code == 400 and "check-and-set" in r.json()["errors"][0], r.text

    read = kv.read_secret_version(path="app/db", raise_on_deleted_version=True)
    assert read["data"]["data"] == {"user": "app", "password": "two"}
    assert read["data"]["metadata"]["version"] == 2 and read["data"]["metadata"]["created_time"].endswith("Z")
    old = kv.read_secret_version(path="app/db", version=1, raise_on_deleted_version=True)
    assert old["data"]["data"]["password"] == "one"

    patched = kv.patch(path="app/db", secret={"password": "three"})
    assert patched["data"]["version"] == 3
    assert kv.read_secret_version(path="app/db", raise_on_deleted_version=True)["data"]["data"] == {
        "user": "app",
        "password": "three",
    }
    # The PATCH verb itself (JSON merge patch: null removes a key).
    r = requests.patch(
        f"{ADDR}/v1/secret/data/app/db",
        json={"data": {"user": None, "extra": "e"}},
        headers={"X-Vault-Token": ROOT, "Content-Type": "application/merge-patch+json"},
        verify=CA,
    )
    assert r.status_code == 200 and r.json()["data"]["version"] == 4, r.text
    assert kv.read_secret_version(path="app/db", raise_on_deleted_version=True)["data"]["data"] == {
        "password": "three",
        "extra": "e",
    }

    kv.delete_latest_version_of_secret(path="app/db")
    raises(exceptions.InvalidPath, kv.read_secret_version, path="app/db", raise_on_deleted_version=True)
    kv.undelete_secret_versions(path="app/db", versions=[4])
    assert kv.read_secret_version(path="app/db", raise_on_deleted_version=True)["data"]["metadata"]["version"] == 4
    kv.delete_secret_versions(path="app/db", versions=[1])
    kv.destroy_secret_versions(path="app/db", versions=[2])
    meta = kv.read_secret_metadata(path="app/db")["data"]
    assert meta["current_version"] == 4
    assert meta["versions"]["1"]["deletion_time"] != "" and meta["versions"]["2"]["destroyed"] is True
    kv.update_metadata(path="app/db", max_versions=2)
    meta = kv.read_secret_metadata(path="app/db")["data"]
    assert meta["max_versions"] == 2 and sorted(meta["versions"]) == ["3", "4"]

    kv.create_or_update_secret(path="app/nested/x", secret={"k": "v"})
    assert sorted(kv.list_secrets(path="app")["data"]["keys"]) == ["db", "nested/"]
    assert kv.list_secrets(path="")["data"]["keys"] == ["app/"]
    raises(exceptions.InvalidPath, kv.list_secrets, path="nothing-here")

    kv.delete_metadata_and_all_versions(path="app/nested/x")
    raises(exceptions.InvalidPath, kv.read_secret_metadata, path="app/nested/x")
    bad = raises(exceptions.InvalidRequest, kv.create_or_update_secret, path="app/typed", secret={"port": 5432})
    assert "string" in str(bad), bad


def tokens_and_policies():
    step("tokens: create, lookup, renew, revoke; policies restrict a token")
    root = client(ADDR, ROOT)
    root.sys.create_or_update_policy(
        name="app-read",
        policy='path "secret/data/app/*" { capabilities = ["read"] }\n'
        'path "secret/metadata/app/*" { capabilities = ["list"] }\n',
    )
    assert "app-read" in root.sys.list_policies()["data"]["policies"]
    assert "secret/data/app/*" in root.sys.read_policy(name="app-read")["data"]["rules"]

    created = root.auth.token.create(policies=["app-read"], ttl="1h", renewable=True)
    token = created["auth"]["client_token"]
    accessor = created["auth"]["accessor"]
    assert created["auth"]["policies"] == ["app-read", "default"] or "app-read" in created["auth"]["policies"]
    looked = root.auth.token.lookup(token)["data"]
    assert looked["accessor"] == accessor and 3500 <= looked["ttl"] <= 3600
    assert root.auth.token.lookup_accessor(accessor)["data"]["accessor"] == accessor

    app = client(ADDR, token)
    assert app.is_authenticated()
    assert app.auth.token.lookup_self()["data"]["accessor"] == accessor
    renewed = app.auth.token.renew_self(increment="2h")
    assert renewed["auth"]["lease_duration"] > 3600
    root.auth.token.renew(token, increment="30m")

    # The policy: read under app/, nothing else.
    assert app.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)["data"]["data"]
    raises(exceptions.Forbidden, app.secrets.kv.v2.create_or_update_secret, path="app/db", secret={"x": "y"})
    raises(exceptions.Forbidden, app.secrets.kv.v2.read_secret_version, path="other/x", raise_on_deleted_version=True)
    r = requests.post(
        f"{ADDR}/v1/sys/capabilities-self",
        json={"paths": ["secret/data/app/db", "sys/seal"]},
        headers={"Authorization": f"Bearer {token}"},
        verify=CA,
    )
    assert r.status_code == 200, r.text
    assert r.json()["secret/data/app/db"] == ["read"] and r.json()["sys/seal"] == ["deny"], r.text

    # Tightening the policy restricts the live token at once.
    root.sys.create_or_update_policy(name="app-read", policy='path "secret/data/else/*" { capabilities = ["read"] }')
    raises(exceptions.Forbidden, app.secrets.kv.v2.read_secret_version, path="app/db", raise_on_deleted_version=True)

    root.auth.token.revoke(token)
    assert not app.is_authenticated()
    other = root.auth.token.create(policies=["default"], ttl="10m")["auth"]
    root.auth.token.revoke_accessor(other["accessor"])
    assert not client(ADDR, other["client_token"]).is_authenticated()
    orphan = root.auth.token.create_orphan(policies=["default"], ttl="10m")["auth"]["client_token"]
    client(ADDR, orphan).auth.token.revoke_self()
    assert not client(ADDR, orphan).is_authenticated()
    root.sys.delete_policy(name="app-read")
    assert "app-read" not in root.sys.list_policies()["data"]["policies"]


def approle():
    step("AppRole: role, role-id, secret-id, login")
    root = client(ADDR, ROOT)
    root.sys.create_or_update_policy(name="web", policy='path "secret/data/app/*" { capabilities = ["read"] }')
    root.auth.approle.create_or_update_approle(role_name="web", token_policies=["web"], token_ttl="10m")
    assert "web" in root.auth.approle.list_roles()["data"]["keys"]
    assert root.auth.approle.read_role(role_name="web")["data"]["token_ttl"] == 600
    role_id = root.auth.approle.read_role_id(role_name="web")["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(role_name="web")["data"]["secret_id"]
    app = client(ADDR)
    login = app.auth.approle.login(role_id=role_id, secret_id=secret_id)
    assert app.token == login["auth"]["client_token"] and "web" in login["auth"]["policies"]
    assert app.secrets.kv.v2.read_secret_version(path="app/db", raise_on_deleted_version=True)["data"]["data"]
    raises(exceptions.InvalidRequest, client(ADDR).auth.approle.login, role_id=role_id, secret_id="wrong")
    root.auth.approle.delete_role(role_name="web")


def malformed():
    step("malformed requests get Vault-shaped errors and the node keeps serving")
    h = {"X-Vault-Token": ROOT}
    cases = [
        ("POST", "secret/data/app/x", {"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400),
        ("POST", "secret/data/app/x", {"data": "<xml/>", "headers": {"Content-Type": "text/xml"}}, 415),
        ("PATCH", "secret/data/app/db", {"json": {"data": {}}}, 415),
        ("POST", "secret/data/app/x", {"data": "x" * (2 * 1024 * 1024)}, 413),
        ("GET", "no/such/engine", {}, 404),
        ("GET", "sys/nothing-here", {}, 404),
        ("DELETE", "sys/seal-status", {}, 405),
        ("POST", "secret/data/app/x", {"json": [1, 2]}, 400),
        ("GET", "secret/data/", {}, 400),
    ]
    for method, path, kwargs, expected in cases:
        headers = dict(h, **kwargs.pop("headers", {}))
        r = requests.request(method, f"{ADDR}/v1/{path}", headers=headers, verify=CA, **kwargs)
        assert r.status_code == expected, (method, path, r.status_code, r.text[:200])
        errors = r.json()["errors"]
        assert isinstance(errors, list) and errors, r.text
    r = requests.get(f"{ADDR}/v1/secret/data/app/db", headers={"X-Vault-Token": "hvs.forged"}, verify=CA)
    assert r.status_code == 403 and "hvs.forged" not in r.text, r.text
    assert client(ADDR, ROOT).sys.read_health_status(method="GET")


def main():
    init_and_unseal()
    health_of_cluster()
    kv_v2()
    tokens_and_policies()
    approle()
    malformed()
    print("hvac suite: all checks passed")


if __name__ == "__main__":
    sys.exit(main())
