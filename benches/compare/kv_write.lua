-- wrk script: KV v2 writes, a 101-byte JSON body (an 80-byte value), rotating over BENCH_NKEYS
-- keys per wrk thread: secret/data/bench-<BENCH_PREFIX><thread>-<i>.
-- Env: BENCH_TOKEN, BENCH_NKEYS (default 1000), BENCH_PREFIX (run.sh gives each of the
-- concurrent wrk processes of a "spread" cell its own, so they never write the same keys).

-- setup() runs in the main Lua state, once per thread: number the threads.
local nthreads = 0
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

local counter = 0
local nkeys, prefix
function init(args)
  local token = os.getenv("BENCH_TOKEN")
  assert(token and token ~= "", "BENCH_TOKEN is not set")
  nkeys = tonumber(os.getenv("BENCH_NKEYS") or "1000")
  prefix = os.getenv("BENCH_PREFIX") or ""
  wrk.method = "POST"
  wrk.headers["X-Vault-Token"] = token
  wrk.headers["Content-Type"] = "application/json"
  -- {"data":{"value":"xxx…x"}} = 101 bytes
  wrk.body = '{"data":{"value":"' .. string.rep("x", 80) .. '"}}'
end

function request()
  counter = counter + 1
  return wrk.format(nil, string.format("/v1/secret/data/bench-%s%d-%d", prefix, tid, counter % nkeys))
end
