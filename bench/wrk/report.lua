-- Prints the run as one `BENCH {json}` line for bench/report.mjs. Loaded on its own for the plain
-- workloads and by paid.lua for the paid ones; defines no request/response hook, so wrk keeps its
-- fast static-request path.

bench_threads = bench_threads or {}

function done(summary, latency, requests)
  local exhausted = 0
  for _, thread in ipairs(bench_threads) do
    exhausted = exhausted + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,'
      .. '"p99_us":%d,"mean_us":%.1f,"max_us":%d,"exhausted":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, exhausted))
end
