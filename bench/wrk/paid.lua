-- A fresh payment per request: every wrk thread sends its own disjoint slice of a file of
-- pre-signed PAYMENT-SIGNATURE headers (examples/bench_payments.rs), so no header is ever sent twice.
-- Arguments after `--`: FILE FIRST COUNT THREADS PATH — lines [FIRST, FIRST+COUNT) of FILE are split
-- evenly over THREADS threads. If a thread runs out it starts its slice again and counts it in
-- `exhausted`; the gateway then refuses the replays, so such a run is flagged.

bench_threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(bench_threads, thread)
end

function init(args)
  local file, first, count, threads = args[1], tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  path = args[5]
  local per_thread = math.floor(count / threads)
  local from = first + id * per_thread
  local to = from + per_thread - 1
  payments = {}
  local n = 0
  for line in io.lines(file) do
    if n > to then break end
    if n >= from then payments[#payments + 1] = line end
    n = n + 1
  end
  if #payments == 0 then
    error("no payments for thread " .. id .. " in " .. file)
  end
  next_payment = 0
  wrapped = 0
end

function request()
  next_payment = next_payment + 1
  if next_payment > #payments then
    next_payment = 1
    wrapped = wrapped + 1
  end
  return wrk.format("GET", path, { ["PAYMENT-SIGNATURE"] = payments[next_payment] })
end

dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
