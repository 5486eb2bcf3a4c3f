-- What bench/wrk.lua and the peers' wrk scripts (bench/peers/*.lua) share, loaded with
--   local common = dofile(<this file>)   (see either script for how it finds the path)
-- common.json_string(s)     a JSON string literal
-- common.setup(thread)      wrk's setup(): numbers the threads (global `tid` in each)
-- common.init_thread()      per thread, from init(): seeds math.random, resets the counters
-- common.diag_response      wrk's response() when BENCH_DIAG is set: status counts and up to
--                           three error bodies per thread
-- common.done(mode, out, diag)  wrk's done(): writes the JSON summary measure.py reads to
--                           `out` (stdout when nil); with `diag`, the counts and samples
local M = {}
local format = string.format
local threads = {}
local counter = 0

function M.json_string(s)
  s = tostring(s)
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

function M.setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function M.init_thread()
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
  -- Discard the first values (LuaJIT's generator is fine, this only decorrelates threads).
  for _ = 1, 10 do math.random() end
  statuses = {}
  samples = {}
  nsamples = 0
end

function M.diag_response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if status >= 400 and nsamples < 3 then
    nsamples = nsamples + 1
    local rid = headers["X-Request-Id"] or headers["x-request-id"] or ""
    samples[nsamples] = key .. " " .. rid .. " " .. string.sub(body or "", 1, 600)
  end
end

function M.done(mode, out, diag)
  return function(summary, latency, requests)
    local e = summary.errors
    local parts = {
      '"mode":' .. M.json_string(mode),
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
          table.insert(texts, M.json_string(s))
        end
      end
      local c = {}
      for k, v in pairs(counts) do
        table.insert(c, M.json_string(k) .. ":" .. v)
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
end

return M
