-- batch-settlement vouchers: every wrk thread pays from a channel of its own, with the vouchers of
-- a file examples/bench_payments.rs (`vouchers` mode) signed for it in order. A channel takes one
-- request at a time and each voucher's cumulative amount follows the previous one, so run it with
-- one connection per thread (`-t C -c C`): a connection sends its requests one after another.
-- Arguments after `--`: PREFIX COUNT PATH — thread n sends lines 2 .. COUNT+1 of PREFIX<n>.txt
-- (line 1, the deposit that opens the channel, was sent before the run). If a thread runs out it
-- starts again and counts it in `exhausted`; the gateway refuses those vouchers (their amounts are
-- behind the channel's), so such a run is flagged.

bench_threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(bench_threads, thread)
end

function init(args)
  local prefix, count = args[1], tonumber(args[2])
  path = args[3]
  local file = prefix .. id .. ".txt"
  vouchers = {}
  local n = 0
  for line in io.lines(file) do
    if n > count then break end
    if n >= 1 then vouchers[#vouchers + 1] = line end
    n = n + 1
  end
  if #vouchers == 0 then
    error("no vouchers for thread " .. id .. " in " .. file)
  end
  -- wrk calls the first thread's request() once before the run, to check the request it builds
  -- (script_verify_request) and sends nothing; that thread gives its first voucher twice, so that
  -- the probe skips none of its channel's amounts.
  next_voucher = id == 0 and -1 or 0
  wrapped = 0
end

function request()
  next_voucher = next_voucher + 1
  if next_voucher > #vouchers then
    next_voucher = 1
    wrapped = wrapped + 1
  end
  return wrk.format("GET", path, { ["PAYMENT-SIGNATURE"] = vouchers[math.max(next_voucher, 1)] })
end

dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
