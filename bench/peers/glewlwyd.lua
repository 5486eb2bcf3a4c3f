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

local function json_string(s)
  s = tostring(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
if auth and #auth > 0 then
  wrk.headers["Authorization"] = auth
end

local tokens = {}
local ntokens = 0

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
  for _ = 1, 10 do random() end
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
  statuses = {}
  samples = {}
  nsamples = 0
end

request = function()
  return wrk.format(nil, path, nil,
    "grant_type=refresh_token&refresh_token=" .. tokens[random(1, ntokens)])
end

if diag then
  response = function(status, headers, body)
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
    if status >= 400 and nsamples < 3 then
      nsamples = nsamples + 1
      samples[nsamples] = key .. " " .. string.sub(body or "", 1, 600)
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local parts = {
    '"mode":' .. json_string(mode),
    '"duration_us":' .. summary.duration,
    '"requests":' .. summary.requests,
    '"bytes":' .. summary.bytes,
    '"errors_connect":' .. e.connect,
    '"errors_read":' .. e.read,
    '"errors_write":' .. e.write,
    '"errors_status":' .. e.status,
    '"errors_timeout":' .. e.timeout,
    '"latency_mean_us":' .. format("%.1f", latency.mean),
    '"latency_max_us":' .. latency.max,
    '"p50_us":' .. latency:percentile(50),
    '"p90_us":' .. latency:percentile(90),
    '"p99_us":' .. latency:percentile(99),
    '"p999_us":' .. latency:percentile(99.9),
  }
  if diag then
    local counts, texts = {}, {}
    for _, t in ipairs(threads) do
      for k, v in pairs(t:get("statuses") or {}) do
        counts[k] = (counts[k] or 0) + v
      end
      for _, s in ipairs(t:get("samples") or {}) do
        table.insert(texts, json_string(s))
      end
    end
    local c = {}
    for k, v in pairs(counts) do
      table.insert(c, json_string(k) .. ":" .. v)
    end
    table.insert(parts, '"statuses":{' .. table.concat(c, ",") .. "}")
    table.insert(parts, '"samples":[' .. table.concat(texts, ",") .. "]")
  end
  local text = "{" .. table.concat(parts, ",") .. "}\n"
  if out then
    local f = assert(io.open(out, "w"))
    f:write(text)
    f:close()
  else
    io.write(text)
  end
end
