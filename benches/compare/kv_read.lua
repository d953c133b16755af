-- wrk script: KV v2 read of one key, secret/bench-key (run.sh writes it before the first cell).
-- Env: BENCH_TOKEN (the root token of the system under test), BENCH_PATH (default
-- /v1/secret/data/bench-key).
local token = os.getenv("BENCH_TOKEN")
assert(token and token ~= "", "BENCH_TOKEN is not set")
wrk.method = "GET"
wrk.path = os.getenv("BENCH_PATH") or "/v1/secret/data/bench-key"
wrk.headers["X-Vault-Token"] = token
