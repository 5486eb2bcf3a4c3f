-- wrk 4.x (LuaJIT) script for the Glewlwyd peer (bench/peers/glewlwyd.sh): the OIDC plugin's
-- refresh-token grant, one POST per request with a random refresh token from a pool.
-- Configured by environment:
--   BENCH_GLW_POOL  file with one refresh token per line (required)
--   BENCH_GLW_AUTH  the whole Authorization header value ("Basic …", client_secret_basic);
--                   empty or unset: no client authentication (a public client)
--   BENCH_GLW_PATH  the token endpoint path (default /api/oidc/token)
--   BENCH_OUT       where done() writes its JSON summary (the shape of bench/wrk.lua's)
--   BENCH_DIAG      when set, count status codes and keep a few error bodies (slower)

local pool_file = os.getenv("BENCH_GLW_POOL")
local auth = os.getenv("BENCH_GLW_AUTH")
local path = os.getenv("BENCH_GLW_PATH") or "/api/oidc/token"
local out = os.getenv("BENCH_OUT")
local diag = os.getenv("BENCH_DIAG")
local mode = "refresh_token"

local random = math.random
local format = string.format

-- The shared parts (threads, diagnostics, the JSON summary): bench/wrk_common.lua.
local here = (debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./")
local common = dofile(here .. "../wrk_common.lua")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
if auth and #auth > 0 then
  wrk.headers["Authorization"] = auth
end

local tokens = {}
local ntokens = 0

setup = common.setup

function init(args)
  common.init_thread()
  local f = assert(io.open(pool_file or "", "r"), "cannot open BENCH_GLW_POOL")
  for line in f:lines() do
    if #line > 0 then
      ntokens = ntokens + 1
      -- Glewlwyd's refresh tokens are URL-safe already; escape anyway.
      tokens[ntokens] = line:gsub("[^%w%-%._~]", function(c) return format("%%%02X", c:byte()) end)
    end
  end
  f:close()
  assert(ntokens > 0, "no refresh tokens in " .. tostring(pool_file))
end

request = function()
  return wrk.format(nil, path, nil,
    "grant_type=refresh_token&refresh_token=" .. tokens[random(1, ntokens)])
end

if diag then
  response = common.diag_response
end

done = common.done(mode, out, diag)
