-- wrk script for `make soak` (bench/soak.py writes the request templates and sets the
-- environment). Every request is built from raw bytes:
--   SOAK_DIR/<kind>.pre .. "soak-<kind>-<thread>-<n>" .. SOAK_DIR/<kind>.post
-- where .pre ends with "X-Soak-Id: " and .post holds the rest of the headers and the
-- body, so every request carries a unique id the access log can be matched against.
--   SOAK_DIR       directory of the templates
--   SOAK_PLAN      kinds in the order they repeat, comma-separated (e.g. "c,s,c,k")
--   SOAK_QUOTA     requests per thread. A thread that has sent them sends no more
--                  (delay() holds its connections idle), and once all are answered it
--                  prints "SOAK_THREAD_DONE <thread>" and stops; soak.py then ends wrk.
--                  No request is in flight when wrk closes its connections, so every
--                  request started reached Envoy and was answered.
-- At the end one line `SOAK_JSON {...}` carries what soak.py parses: requests started
-- and answered, per kind and per status, summed over the threads.

local threads = {}
local next_tid = 0

function setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
  table.insert(threads, thread)
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

function init(args)
  local dir = os.getenv("SOAK_DIR")
  quota = tonumber(os.getenv("SOAK_QUOTA"))
  plan = {}
  pre, post = {}, {}
  for kind in string.gmatch(os.getenv("SOAK_PLAN"), "[^,]+") do
    table.insert(plan, kind)
    if not pre[kind] then
      pre[kind] = read_file(dir .. "/" .. kind .. ".pre")
      post[kind] = read_file(dir .. "/" .. kind .. ".post")
    end
  end
  prefix = "soak-"
  suffix = "-" .. tid .. "-"
  -- wrk 4.1 calls the first thread's request() once before the run, to check the
  -- request (script_verify_request); that call sends nothing, so it is not counted.
  started = (tid == 1) and -1 or 0
  answered, reserved = 0, 0
  sent = {}
  statuses = {}
end

-- wrk asks delay() before every request it sends (and request() right after the delay),
-- so the quota is counted here: a connection asking once the quota is used up waits an
-- hour instead, that is, until soak.py ends wrk.
function delay()
  if reserved >= quota then
    return 3600000
  end
  reserved = reserved + 1
  return 0
end

function request()
  started = started + 1
  if started == 0 then
    return pre["c"] .. "soak-verify" .. post["c"]
  end
  local kind = plan[(started - 1) % #plan + 1]
  sent[kind] = (sent[kind] or 0) + 1
  return pre[kind] .. prefix .. kind .. suffix .. started .. post[kind]
end

function response(status, headers, body)
  answered = answered + 1
  local s = tostring(status)
  statuses[s] = (statuses[s] or 0) + 1
  if answered == quota then
    io.write("SOAK_THREAD_DONE " .. tid .. "\n")
    io.flush()
    wrk.thread:stop()
  end
end

local function add(into, from)
  for k, v in pairs(from or {}) do
    into[k] = (into[k] or 0) + v
  end
end

local function json_map(t)
  local parts = {}
  for k, v in pairs(t) do
    table.insert(parts, string.format('"%s":%d', k, v))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local total_started, total_answered = 0, 0
  local all_sent, all_statuses = {}, {}
  for _, t in ipairs(threads) do
    total_started = total_started + (t:get("started") or 0)
    total_answered = total_answered + (t:get("answered") or 0)
    add(all_sent, t:get("sent"))
    add(all_statuses, t:get("statuses"))
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK_JSON {"started":%d,"answered":%d,"completed":%d,"duration_us":%d,' ..
    '"sent":%s,"statuses":%s,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p99":%d,"max":%d}}\n',
    total_started, total_answered, summary.requests, summary.duration,
    json_map(all_sent), json_map(all_statuses),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
