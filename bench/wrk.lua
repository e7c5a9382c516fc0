-- wrk script for `make bench` (bench/run_bench.py sets the environment).
--   BENCH_METHOD  GET or POST (default GET)
--   BENCH_BODY    file whose bytes are the request body (POST only)
--   BENCH_HOST    Host header (the tenant's hostname)
--   BENCH_KEY     API key sent as `Authorization: Bearer` (sent to both Envoys, so the
--                 request bytes are identical with and without the filter)
-- At the end one line `BENCH_JSON {...}` carries the numbers run_bench.py parses.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local host = os.getenv("BENCH_HOST")
if host and host ~= "" then
  wrk.headers["Host"] = host
end
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
local body_file = os.getenv("BENCH_BODY")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/json"
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
