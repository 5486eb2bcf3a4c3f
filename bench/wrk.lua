-- Requests for the hallpass benchmark, for wrk 4.x (LuaJIT). Configured by environment:
--   BENCH_MODE      token | token_duration | jwt | jwks | jwks_304 | create | list | wrong_secret
--                   | zipf_burst
--   BENCH_ZIPF_S    zipf_burst: the popularity exponent (default 1.1)
--   BENCH_BURST     zipf_burst: calls per page view of one session (default 4)
--   BENCH_SESSIONS  number of seeded sessions (tokens bench-token-0 .. N-1)
--   BENCH_USERS     number of seeded users (ids user-test-beec0000-0000-4000-8000-%012x)
--   BENCH_AUTH      the whole Authorization header value ("Basic …")
--   BENCH_PROJECT   project_id (for the JWKS path and wrong_secret)
--   BENCH_ETAG      the JWKS ETag (jwks_304)
--   BENCH_JWTS      file with one session JWT per line (jwt)
--   BENCH_OUT       where done() writes its JSON summary
--   BENCH_DIAG      when set, count status codes and keep a few error bodies (slower)
-- Each request picks a random seeded session or user.

local mode = os.getenv("BENCH_MODE") or "token"
local sessions = tonumber(os.getenv("BENCH_SESSIONS") or "1000")
local users = tonumber(os.getenv("BENCH_USERS") or "100")
local auth = os.getenv("BENCH_AUTH")
local project = os.getenv("BENCH_PROJECT") or ""
local etag = os.getenv("BENCH_ETAG")
local jwt_file = os.getenv("BENCH_JWTS")
local out = os.getenv("BENCH_OUT")
local diag = os.getenv("BENCH_DIAG")

local random = math.random
local format = string.format
-- The shared parts (threads, diagnostics, the JSON summary), next to this file.
local here = (debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./")
local common = dofile(here .. "wrk_common.lua")
local json_string = common.json_string

local function user_id(j)
  return format("user-test-beec0000-0000-4000-8000-%012x", j)
end

-- Static requests (built once per thread by wrk); dynamic ones define request() below.
if mode == "jwks" or mode == "jwks_304" then
  wrk.method = "GET"
  wrk.path = "/v1/sessions/jwks/" .. project
  wrk.headers = {}
  if mode == "jwks_304" then
    wrk.headers["If-None-Match"] = etag
  end
else
  wrk.headers["Content-Type"] = "application/json"
  if auth then
    wrk.headers["Authorization"] = auth
  end
end

local jwts = {}
local njwts = 0

setup = common.setup

function init(args)
  common.init_thread()
  if mode == "jwt" then
    local f = assert(io.open(jwt_file, "r"), "cannot open BENCH_JWTS")
    for line in f:lines() do
      if #line > 0 then
        njwts = njwts + 1
        jwts[njwts] = line
      end
    end
    f:close()
    assert(njwts > 0, "no JWTs in " .. jwt_file)
  end
end

if mode == "token" then
  request = function()
    return wrk.format("POST", "/v1/sessions/authenticate", nil,
      '{"session_token":"bench-token-' .. random(0, sessions - 1) .. '"}')
  end
elseif mode == "token_duration" then
  request = function()
    return wrk.format("POST", "/v1/sessions/authenticate", nil,
      '{"session_token":"bench-token-' .. random(0, sessions - 1) ..
      '","session_duration_minutes":60}')
  end
elseif mode == "jwt" then
  request = function()
    return wrk.format("POST", "/v1/sessions/authenticate", nil,
      '{"session_jwt":"' .. jwts[random(1, njwts)] .. '"}')
  end
elseif mode == "create" then
  request = function()
    return wrk.format("POST", "/v1/sessions", nil,
      '{"user_id":"' .. user_id(random(0, users - 1)) ..
      '","session_duration_minutes":60,"authentication_factors":' ..
      '[{"type":"password","delivery_method":"knowledge"}]}')
  end
elseif mode == "wrong_secret" then
  -- Caller credentials with a new wrong secret each time: every request costs an argon2id
  -- verification (19 MiB) and is refused (401, or 429 once every argon2 slot is busy).
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local function base64(text)
    local out, n = {}, #text
    for i = 1, n, 3 do
      local a, b, c = text:byte(i, i + 2)
      local v = a * 65536 + (b or 0) * 256 + (c or 0)
      for k = 3, 0, -1 do
        if (k == 1 and not b) or (k == 0 and not c) then
          out[#out + 1] = "="
        else
          local d = math.floor(v / 64 ^ k) % 64
          out[#out + 1] = alphabet:sub(d + 1, d + 1)
        end
      end
    end
    return table.concat(out)
  end
  request = function()
    local secret = "wrong-" .. random(0, 2147483646) .. "-" .. random(0, 2147483646)
    return wrk.format("POST", "/v1/sessions/authenticate",
      { ["Authorization"] = "Basic " .. base64(project .. ":" .. secret),
        ["Content-Type"] = "application/json" },
      '{"session_token":"bench-token-0"}')
  end
elseif mode == "zipf_burst" then
  -- Real traffic: a few sessions are very active (Zipf popularity over the seeded sessions,
  -- rank k chosen with probability ~ 1/k^s), and a page view authenticates its session
  -- several times within a few milliseconds (its API calls). Each wrk thread plays page
  -- views one after another; its connections share the page's calls.
  local s = tonumber(os.getenv("BENCH_ZIPF_S") or "1.1")
  local burst = tonumber(os.getenv("BENCH_BURST") or "4")
  local cdf = nil
  local function build()
    cdf = {}
    local total = 0
    for k = 1, sessions do
      total = total + 1 / (k ^ s)
      cdf[k] = total
    end
    for k = 1, sessions do cdf[k] = cdf[k] / total end
  end
  local function pick()
    if not cdf then build() end
    local u = random()
    local lo, hi = 1, sessions
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < u then lo = mid + 1 else hi = mid end
    end
    return lo - 1
  end
  local current, left = 0, 0
  request = function()
    if left == 0 then
      current = pick()
      left = burst
    end
    left = left - 1
    return wrk.format("POST", "/v1/sessions/authenticate", nil,
      '{"session_token":"bench-token-' .. current .. '"}')
  end
elseif mode == "list" then
  request = function()
    return wrk.format("GET", "/v1/sessions?user_id=" .. user_id(random(0, users - 1)), nil, nil)
  end
end

if diag then
  response = common.diag_response
end

done = common.done(mode, out, diag)
