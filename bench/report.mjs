// Turns bench/run.sh's results.jsonl into the Markdown of BENCHMARKS.md (on stdout).
//   node bench/report.mjs results.jsonl --command "..." --build release --duration 10 --reps 3 ...
import { execSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';

const [file, ...rest] = process.argv.slice(2);
const opt = {};
for (let i = 0; i + 1 < rest.length; i += 2) opt[rest[i].replace(/^--/, '')] = rest[i + 1];
const records = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));

const WORKLOADS = [
  ['baseline', 'baseline: Pingora passthrough (`examples/passthrough.rs`), `GET /free`'],
  ['nginx', 'nginx (Debian), same hop and headers, `GET /free`'],
  ['gateway_free', 'gateway, free route `GET /free` (10 routes)'],
  ['gateway_free_large', 'gateway, free route `GET /free`, 10,010 routes'],
  ['gateway_402', 'gateway, unpaid priced route → 402'],
  ['gateway_free_h2', 'gateway, free route over h2c (`[server] http2`; `h2load`, up to 4 connections, c streams in flight)'],
  ['gateway_402_h2', 'gateway, unpaid priced route → 402 over h2c (`h2load`)'],
  ['gateway_paid', 'gateway, paid route (fresh payment per request; verify → proxy → settle)'],
  ['gateway_paid_local', 'gateway, paid route with `verify = "local"` (local checks → proxy → settle: one facilitator exchange)'],
  ['gateway_voucher', 'gateway, `batch-settlement` route, same price (a channel per connection, a voucher per request checked at the gateway; `wrk -t<c>`)'],
  ['gateway_free_threads', 'gateway, free route `GET /free` driven like the voucher route (`wrk -t<c>`: a thread per connection)'],
  ['gateway_paid_redis', 'gateway, paid route with `[redis]` (replay guard and idempotency in Redis)'],
  ['gateway_paid_journal', 'gateway, paid route with `[journal] path` (each payment in the file journal before the upstream and before the answer)'],
  ['gateway_paid_ledger', 'gateway, paid route with `[journal] url` (the PostgreSQL ledger, same promise)'],
  ['express_paid', '`@x402/express` 2.27.0, same paid route and stub facilitator'],
  ['axum_paid', '`x402-axum` 2.0 (in process, no proxy hop), same paid route and stub facilitator'],
  ['gateway_paid_slow', 'gateway, paid route, facilitator taking {SLOW} ms per call'],
];
const TARGET_CONNS = 5000;
const TARGET_NONCES = 1_000_000;

const slowMs = Number(opt['slow-ms'] || 50);
for (const w of WORKLOADS) w[1] = w[1].replace('{SLOW}', String(slowMs));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x, digits = 0) =>
  Number.isFinite(x) ? x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '—';
const ms = (us) => (Number.isFinite(us) ? (us >= 1000 ? `${fmt(us / 1000, 2)} ms` : `${fmt(us)} µs`) : '—');
const mib = (kib) => `${fmt(kib / 1024, 1)} MiB`;
const sh = (cmd) => {
  try {
    return execSync(cmd, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown';
  }
};

// ---- per run ------------------------------------------------------------------------------------
function perRun(r) {
  const w = r.wrk;
  const seconds = w.duration_us / 1e6;
  const socketErrors = w.connect_errors + w.read_errors + w.write_errors + w.timeouts;
  const problems = [];
  if (r.workload === 'gateway_402' || r.workload === 'gateway_402_h2') {
    // wrk counts every status ≥ 400 as an error: here every answer must be one (the 402).
    if (w.status_errors < w.requests * 0.999) problems.push(`only ${w.status_errors} of ${w.requests} were 4xx`);
  } else if (w.status_errors > w.requests * 0.001) {
    problems.push(`${w.status_errors} non-2xx of ${w.requests}`);
  }
  if (socketErrors > w.requests * 0.001) problems.push(`${socketErrors} socket errors/timeouts`);
  if (w.exhausted > 0) {
    problems.push(r.workload === 'gateway_voucher'
      ? 'ran out of pre-signed vouchers (raise VOUCHER_RATE_CAP)'
      : 'ran out of pre-signed payments (raise PAID_RATE_CAP)');
  }
  return {
    rps: w.requests / seconds,
    p50: w.p50_us,
    p99: w.p99_us,
    cpu: w.requests ? ((r.cpu_ticks / r.clk_tck) * 1e6) / w.requests : NaN,
    hwm: r.hwm_kib,
    nonOk: r.workload === 'gateway_402' || r.workload === 'gateway_402_h2' ? w.requests - w.status_errors : w.status_errors,
    problems,
  };
}

const runs = records.filter((r) => r.workload);
const concurrencies = [...new Set(runs.map((r) => r.concurrency))].sort((a, b) => a - b);
const summary = {};
for (const [workload] of WORKLOADS) {
  for (const c of concurrencies) {
    const rs = runs.filter((r) => r.workload === workload && r.concurrency === c).map(perRun);
    if (rs.length === 0) continue;
    summary[`${workload}@${c}`] = {
      reps: rs.length,
      rps: median(rs.map((r) => r.rps)),
      p50: median(rs.map((r) => r.p50)),
      p99: median(rs.map((r) => r.p99)),
      cpu: median(rs.map((r) => r.cpu)),
      hwm: Math.max(...rs.map((r) => r.hwm)),
      nonOk: rs.reduce((a, r) => a + r.nonOk, 0),
      problems: rs.flatMap((r) => r.problems),
    };
  }
}
const get = (w, c) => summary[`${w}@${c}`];
const ratio = (a, b) => (a && b && b.rps ? a.rps / b.rps : NaN);

// ---- machine ------------------------------------------------------------------------------------
const cpuinfo = existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
const model = (cpuinfo.match(/^model name\s*:\s*(.*)$/m) || [])[1] || os.cpus()[0]?.model || 'unknown';
const mhz = (cpuinfo.match(/^cpu MHz\s*:\s*(.*)$/m) || [])[1];
const memTotal = (readFileSync('/proc/meminfo', 'utf8').match(/^MemTotal:\s*(\d+)/m) || [])[1];
const smoke = opt.smoke === '1';

const out = [];
const p = (...lines) => out.push(...lines);
p('# Benchmarks', '');
if (smoke) {
  p(
    '> **Smoke run**: a few seconds per workload, to prove the scripts work end to end. The numbers',
    '> below mean nothing; run `bash bench/run.sh` on a quiet machine for real ones.',
    '',
  );
}
p(
  'What the paywall costs per request: the gateway against two plain proxies (a Pingora passthrough',
  'and nginx, both adding the same `Host`/`X-Forwarded-*` headers as the gateway) and against two',
  'x402 middlewares (the official `@x402/express`, and `x402-axum`, the published Rust one, built from',
  '`bench/x402-axum/`), all in one run on one machine, on loopback, in front of the same tiny upstream',
  '(`examples/bench_upstream.rs`) and the same stub facilitator (`examples/bench_facilitator.rs`,',
  'which approves and settles instantly: this measures the gateway, not a chain). One more stub',
  `facilitator waits ${slowMs} ms before each answer, to show how the gateway holds payments in flight.`,
  '',
  '## How it was produced',
  '',
  '```sh',
  opt.command || 'bash bench/run.sh',
  '```',
  '',
  `- date: ${new Date().toISOString()}`,
  `- machine: ${model}${mhz ? ` (${fmt(Number(mhz))} MHz)` : ''}, ${sh('nproc')} CPUs (nproc), ` +
    `${memTotal ? mib(Number(memTotal)) : 'unknown'} memory, Linux ${sh('uname -r')}`,
  `- load average when the report was written: ${sh('cut -d" " -f1-3 /proc/loadavg')}`,
  `- ${sh('rustc --version')}, ${opt.build || 'release'} build; Node.js ${process.version}; ${sh('wrk -v 2>&1 | head -n 1').split(' [')[0]}`,
  `- load: \`wrk -t${opt['wrk-threads'] || 1} -c<concurrency> -d${opt.duration}s\` after a ${opt.warmup}s warm-up, ` +
    `${opt.reps} repetition(s) per cell, medians reported; every run starts its server process afresh`,
  '- everything (load generator, upstream, facilitator, server under test) shares the same CPUs: ratios',
  '  within one run are what matter, absolute numbers depend on the machine',
  ...(opt.loaded ? [`- **the machine was loaded by other work during this run** (${opt.loaded}): absolute figures`,
    '  are low and ratios noisier than on a quiet machine; instruction counts (profile) are unaffected'] : []),
  '',
  '## Throughput, latency, CPU and memory',
  '',
  'CPU is the server\'s user+system time (from `/proc/PID/stat`, nginx\'s workers included) during the',
  'measured run divided by the requests completed; peak RSS is `VmHWM` at the end of the run (highest',
  'over repetitions; summed over nginx\'s processes). The gateway logs one line per payment (its default',
  '`info` level), included in its cost. "× baseline" is requests/s against the Pingora passthrough at',
  'the same concurrency.',
  '',
  '| workload | c | requests/s | × baseline | p50 | p99 | CPU / request | peak RSS | check |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
);
for (const c of concurrencies) {
  for (const [workload, label] of WORKLOADS) {
    const s = get(workload, c);
    if (!s) continue;
    const base = get('baseline', c);
    const vsBase = workload === 'baseline' ? '1.00' : base ? fmt(ratio(s, base), 2) : '—';
    const check = s.problems.length ? `**FLAGGED**: ${[...new Set(s.problems)].join('; ')}` : 'ok';
    p(
      `| ${label} | ${c} | ${fmt(s.rps)} | ${vsBase} | ` +
        `${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.cpu)} | ${mib(s.hwm)} | ${check} |`,
    );
  }
}
if (opt['x402-axum'] === '0') {
  p('', '`x402-axum` was not measured in this run (a smoke run leaves it out: compiling it takes minutes; the full run builds and measures it).');
}
const redisCost = concurrencies
  .map((c) => [c, get('gateway_paid', c), get('gateway_paid_redis', c)])
  .filter(([, plain, redis]) => plain && redis)
  .map(([c, plain, redis]) => `c=${c}: ${ms(redis.cpu - plain.cpu)} CPU and ${ms(redis.p50 - plain.p50)} p50 per request, ` +
    `${fmt(ratio(redis, plain), 2)}× the requests/s`);
if (redisCost.length) {
  p('', `What \`[redis]\` adds to a paid request (against the same route without it): ${redisCost.join('; ')}.`);
}
for (const [workload, what] of [['gateway_paid_journal', 'the file journal (`[journal] path`)'], ['gateway_paid_ledger', 'the PostgreSQL ledger (`[journal] url`)']]) {
  const cost = concurrencies
    .map((c) => [c, get('gateway_paid', c), get(workload, c)])
    .filter(([, plain, journaled]) => plain && journaled)
    .map(([c, plain, journaled]) => `c=${c}: ${ms(journaled.cpu - plain.cpu)} CPU and ${ms(journaled.p50 - plain.p50)} p50 per request, ` +
      `${fmt(ratio(journaled, plain), 2)}× the requests/s (target at c=32: ≥ 0.80×)`);
  if (cost.length) p('', `What ${what} adds to a paid request: ${cost.join('; ')}.`);
}
// The free route under the voucher workload's wrk shape (a thread per connection); at c up to
// wrk's thread count that is the ordinary free run.
const freeLike = (c) => get('gateway_free_threads', c) ?? (c <= Number(opt['wrk-threads'] || 1) ? get('gateway_free', c) : undefined);
const voucherVsPaid = concurrencies
  .map((c) => [c, get('gateway_paid', c), get('gateway_voucher', c), get('gateway_free', c)])
  .filter(([, paid, voucher]) => paid && voucher)
  .map(([c, paid, voucher]) => `c=${c}: ${fmt(ratio(voucher, paid), 2)}× the requests/s, ` +
    `${ms(voucher.cpu)} CPU per request against ${ms(paid.cpu)}` +
    (freeLike(c) ? ` (the free route driven the same way: ${ms(freeLike(c).cpu)}, ${fmt(voucher.cpu / freeLike(c).cpu, 2)}×)` : ''));
if (voucherVsPaid.length) {
  p('', 'Paying from a `batch-settlement` channel against a fresh `exact` payment per request, on the same ' +
    `gateway: ${voucherVsPaid.join('; ')}. Each run opens its channels (a deposit each, verified and settled ` +
    'through the stub facilitator) before the warm-up; the warm-up pays from channels of its own.');
}
p(
  '',
  '"check": paid and voucher runs must be answered 200 (wrk\'s non-2xx count ≈ 0, no payment header',
  'reused, every voucher in its channel\'s order), the unpaid run must be answered 402 throughout.',
  '',
);

// ---- memory -------------------------------------------------------------------------------------
const conns = records.find((r) => r.memory === 'idle_connections' && r.server === 'gateway');
const baseConns = records.find((r) => r.memory === 'idle_connections' && r.server === 'baseline');
const nginxConns = records.find((r) => r.memory === 'idle_connections' && r.server === 'nginx');
const perConn = (r) => ((r.rss_kib - r.idle_rss_kib) * 1024) / r.connections;
const replay = records.find((r) => r.memory === 'replay_guard');
p('## Memory', '');
if (conns) {
  p(
    `- gateway idle: ${mib(conns.idle_rss_kib)} RSS`,
    `- with ${fmt(conns.connections)} idle keep-alive connections (each has served one request; ` +
      `${fmt(conns.fds)} open descriptors): ${mib(conns.rss_kib)} RSS (peak ${mib(conns.hwm_kib)}), ` +
      `${fmt(((conns.rss_kib - conns.idle_rss_kib) * 1024) / conns.connections)} bytes per connection`,
  );
}
if (baseConns) {
  p(
    `- for comparison, the baseline passthrough: ${mib(baseConns.idle_rss_kib)} idle, ${mib(baseConns.rss_kib)} with ` +
      `${fmt(baseConns.connections)} connections, ` +
      `${fmt(((baseConns.rss_kib - baseConns.idle_rss_kib) * 1024) / baseConns.connections)} bytes per connection`,
  );
}
if (nginxConns) {
  p(
    `- nginx (all its processes): ${mib(nginxConns.idle_rss_kib)} idle, ${mib(nginxConns.rss_kib)} with ` +
      `${fmt(nginxConns.connections)} connections, ${fmt(perConn(nginxConns))} bytes per connection`,
  );
}
let nonceTotalKib = NaN;
if (replay) {
  const r = replay.result;
  nonceTotalKib = replay.gateway_idle_rss_kib + r.rss_delta_kib;
  p(
    `- replay guard with ${fmt(r.remembered)} remembered authorizations (\`examples/bench_replay.rs\`, ` +
      `the gateway's \`InMemoryReplayGuard\` with real-shaped keys): +${mib(r.rss_delta_kib)} ` +
      `(${fmt(r.bytes_per_entry)} bytes per entry); with the idle gateway: ${mib(nonceTotalKib)}`,
  );
}
p('');

// ---- route table --------------------------------------------------------------------------------
const routeRuns = records.filter((r) => r.routes_bench).map((r) => r.routes_bench);
const routeAdmin = records.find((r) => r.routes_admin)?.routes_admin;
const smallTable = routeRuns.length ? routeRuns.reduce((a, b) => (a.routes <= b.routes ? a : b)) : null;
const largeTable = routeRuns.length ? routeRuns.reduce((a, b) => (a.routes >= b.routes ? a : b)) : null;
if (routeRuns.length) {
  p(
    '## Route table',
    '',
    '`examples/bench_routes.rs` loads each file with the gateway\'s parser and matches the same four',
    'requests against each (`/free`, `/paid`, `/api/orders/7`, `/nothing/here`) in turn; "deep" is',
    '`/api/v3/items9999/42`, four segments into the generated table. Matching time is the best of 7',
    'rounds of 200,000 and includes canonicalising the path. `check` and the hot reload (`SIGHUP`',
    'until the gateway logs `configuration reloaded`) are timed from outside, on the large file.',
    '',
    '| routes | load (parse, validate, build) | overlap report | overlapping pairs | matching / request | deep |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...routeRuns.map((r) => `| ${fmt(r.routes)} | ${fmt(r.load_ms, 1)} ms | ${fmt(r.overlaps_ms, 2)} ms | ${fmt(r.overlaps)} | ${fmt(r.ns_per_match)} ns | ${fmt(r.ns_deep)} ns |`),
    '',
  );
  if (routeAdmin) {
    p(`- \`x402-gateway check\` of the ${fmt(routeAdmin.routes)}-route file: ${fmt(routeAdmin.check_ms)} ms; hot reload: ${fmt(routeAdmin.reload_ms)} ms`, '');
  }
}

// ---- profile ------------------------------------------------------------------------------------
const profile = records.find((r) => r.profile === 'callgrind' && (r.kind ?? 'gateway') === 'gateway');
const profiled = (kind) => records.find((r) => r.profile === 'callgrind' && r.kind === kind);
let perPaidInstructions = NaN;
if (profile) {
  perPaidInstructions = Number(profile.instructions) / profile.requests;
  p(
    '## Profile of a paid request',
    '',
    `\`valgrind --tool=callgrind\` on the gateway (all threads), instrumentation switched on after ${profile.warmup} warm-up payments,`,
    `then ${fmt(profile.requests)} paid requests in sequence on one keep-alive connection ` +
      `(answers: \`${JSON.stringify(profile.client.statuses)}\`):`,
    `**${fmt(perPaidInstructions)} instructions per paid request** (callgrind counts instructions, not time;`,
    'CPU time per request is in the table above).',
    '',
  );
  const compared = [
    ['x402-axum 2.0, same paid route and stub facilitator (in process, no hop)', profiled('axum')],
    ['gateway, free route `GET /free`', profiled('gateway_free')],
    ['Pingora passthrough, `GET /free` (the hop alone)', profiled('baseline')],
  ].filter(([, r]) => r);
  if (compared.length) {
    p('The same client, the same count of requests, on what the paid request is measured against:', '',
      '| server | instructions / request | answers |', '| --- | ---: | --- |',
      `| gateway, paid route | ${fmt(perPaidInstructions)} | \`${JSON.stringify(profile.client.statuses)}\` |`,
      ...compared.map(([name, r]) =>
        `| ${name} | ${fmt(Number(r.instructions) / r.requests)} | \`${JSON.stringify(r.client.statuses)}\` |`),
      '');
  }
  // Annotated lines look like `1,234 (12.34%)  file:function [object]`.
  const annotated = (path) =>
    existsSync(path || '')
      ? readFileSync(path, 'utf8')
          // Only the function table, not the annotated source after it.
          .split(/^-+\n-- Auto-annotated source/m)[0]
          .split('\n')
          .map((l) => l.match(/^\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(\S.*)$/))
          .filter(Boolean)
          .map((m) => ({
            perRequest: Number(m[1].replace(/,/g, '')) / profile.requests,
            share: m[2],
            name: m[3].replace(/\s+\[[^\]]*\]$/, '').replace(/^[^:]*\.(rs|S|c|h):/, ''),
          }))
          .filter((e) => e.name !== 'PROGRAM TOTALS' && !/\(\d+x\)$/.test(e.name))
      : [];
  const short = (name) => (name.length > 110 ? `${name.slice(0, 107)}...` : name).replace(/\|/g, '\\|');
  const row = (e) => `| ${fmt(e.perRequest)} | ${e.share}% | \`${short(e.name)}\` |`;
  const ours = [];
  for (const e of annotated(opt['profile-inclusive'])) {
    // Inclusive cost of the gateway's own functions: where a paid request's instructions go.
    if (!/^<?x402_gateway::/.test(e.name) || ours.some((o) => o.name === e.name)) continue;
    ours.push(e);
  }
  if (ours.length) {
    p('The gateway\'s own functions, inclusive of what they call:', '', '| instructions / request | share | function |',
      '| ---: | ---: | --- |', ...ours.slice(0, 15).map(row), '');
  }
  const self = annotated(opt['profile-self']);
  if (self.length) {
    p('Top functions by their own instructions:', '', '| instructions / request | share | function |',
      '| ---: | ---: | --- |', ...self.slice(0, 20).map(row), '');
  }
}

// ---- targets ------------------------------------------------------------------------------------
const verdict = (ok) => (ok === null ? 'n/a' : ok ? 'met' : '**missed**');
const targets = [];
const add = (name, value, ok) => targets.push(`| ${name} | ${value} | ${verdict(ok)} |`);
const known = (x) => Number.isFinite(x);
for (const c of concurrencies.filter((c) => get('baseline', c))) {
  const base = get('baseline', c);
  const free = ratio(get('gateway_free', c), base);
  add(`free route ≥ 0.95× passthrough requests/s (c=${c})`, `${fmt(free, 3)}×`, known(free) ? free >= 0.95 : null);
  const unpaid = ratio(get('gateway_402', c), base);
  add(`402 ≥ 3× passthrough requests/s (c=${c})`, `${fmt(unpaid, 3)}×`, known(unpaid) ? unpaid >= 3 : null);
  const cpuRatio = get('gateway_paid', c)?.cpu / base.cpu;
  add(`paid: gateway CPU/request ≤ 2.5× passthrough's (c=${c})`,
    `${ms(get('gateway_paid', c)?.cpu)} vs ${ms(base.cpu)}: ${fmt(cpuRatio, 2)}×`, known(cpuRatio) ? cpuRatio <= 2.5 : null);
  if (c === 1) {
    const p50Ratio = get('gateway_paid', c)?.p50 / base.p50;
    add('paid: p50 ≤ 2.5× passthrough p50 (c=1)', `${ms(get('gateway_paid', c)?.p50)} vs ${ms(base.p50)}: ${fmt(p50Ratio, 2)}×`,
      known(p50Ratio) ? p50Ratio <= 2.5 : null);
  }
  const vsExpress = ratio(get('gateway_paid', c), get('express_paid', c));
  add(`paid ≥ 10× \`@x402/express\` requests/s (c=${c})`, `${fmt(vsExpress, 1)}×`, known(vsExpress) ? vsExpress >= 10 : null);
  const axum = get('axum_paid', c);
  const voucher = get('gateway_voucher', c);
  if (voucher) {
    // Against the free route driven the same way: wrk's shape alone moves the server's CPU per
    // request (a thread per connection wakes it for fewer requests at a time).
    const free = freeLike(c);
    const cpuVsFree = voucher.cpu / free?.cpu;
    add(`voucher: CPU/request ≤ 2× the free route's, same wrk shape (c=${c})`,
      `${ms(voucher.cpu)} vs ${ms(free?.cpu)}: ${fmt(cpuVsFree, 2)}×`, known(cpuVsFree) ? cpuVsFree <= 2 : null);
  }
  if (c === 32) {
    const voucherVsAxum = ratio(voucher, axum);
    add('voucher ≥ 1.5× `x402-axum` (`exact`) requests/s (c=32)',
      axum && voucher ? `${fmt(voucher.rps)} vs ${fmt(axum.rps)}: ${fmt(voucherVsAxum, 2)}×` : 'not measured',
      known(voucherVsAxum) ? voucherVsAxum >= 1.5 : null);
    const vsAxum = ratio(get('gateway_paid', c), axum);
    add('paid ≥ 0.6× `x402-axum` requests/s (c=32)', axum ? `${fmt(vsAxum, 2)}×` : 'not measured', known(vsAxum) ? vsAxum >= 0.6 : null);
    const localVsAxum = ratio(get('gateway_paid_local', c), axum);
    add('paid with `verify = "local"` ≥ 0.8× `x402-axum` requests/s (c=32)',
      axum && get('gateway_paid_local', c) ? `${fmt(localVsAxum, 2)}×` : 'not measured', known(localVsAxum) ? localVsAxum >= 0.8 : null);
  }
  if (c === 1) {
    const gap = get('gateway_paid', c)?.p50 - axum?.p50;
    add('paid p50 within 150 µs of `x402-axum` p50 (c=1)', axum ? `${ms(get('gateway_paid', c)?.p50)} vs ${ms(axum.p50)}: +${ms(gap)}` : 'not measured',
      known(gap) ? gap <= 150 : null);
  }
}
const slowRuns = concurrencies.map((c) => [c, get('gateway_paid_slow', c)]).filter(([, s]) => s);
if (slowRuns.length) {
  const [c, s] = slowRuns[slowRuns.length - 1];
  // Two facilitator calls (verify, settle) per payment: the best a server can do is c / (2 × delay).
  const ideal = c / ((2 * slowMs) / 1000);
  add(`${fmt(c)} concurrent paid requests, ${slowMs} ms facilitator: requests/s ≈ c / latency (≥ 80 % of ${fmt(ideal)})`,
    `${fmt(s.rps)} (${fmt((100 * s.rps) / ideal)} %), p50 ${ms(s.p50)}`, c >= 2000 ? s.rps >= 0.8 * ideal : null);
  const [c1, s1] = slowRuns[0];
  const growth = ((s.hwm - s1.hwm) * 1024) / (c - c1);
  add(`${fmt(c)} concurrent paid requests: flat memory (≤ 64 KiB per request in flight)`,
    `${mib(s1.hwm)} at c=${c1}, ${mib(s.hwm)} at c=${c}: ${fmt(growth / 1024, 1)} KiB per request in flight`,
    c >= 2000 ? growth <= 64 * 1024 : null);
}
if (smallTable && largeTable && largeTable.routes > smallTable.routes) {
  const r = largeTable.ns_per_match / smallTable.ns_per_match;
  add(`${fmt(largeTable.routes)} routes: matching cost ≤ 1.1× a ${fmt(smallTable.routes)}-route table`,
    `${fmt(largeTable.ns_per_match)} ns vs ${fmt(smallTable.ns_per_match)} ns: ${fmt(r, 2)}×`, largeTable.routes >= 10000 ? r <= 1.1 : null);
}
if (routeAdmin) {
  add(`${fmt(routeAdmin.routes)} routes: \`check\` and hot reload under 1 s`,
    `check ${fmt(routeAdmin.check_ms)} ms, reload ${fmt(routeAdmin.reload_ms)} ms`,
    routeAdmin.routes >= 10000 ? routeAdmin.check_ms < 1000 && routeAdmin.reload_ms < 1000 : null);
}
if (conns) {
  targets.push(
    `| ≤ 16 KiB RSS per idle keep-alive connection (${fmt(TARGET_CONNS)} ≤ 96 MiB) | ` +
      `${fmt(perConn(conns) / 1024, 1)} KiB; ${mib(conns.rss_kib)} at ${fmt(conns.connections)} | ` +
      `${verdict(conns.connections === TARGET_CONNS ? perConn(conns) <= 16 * 1024 && conns.rss_kib <= 96 * 1024 : null)} |`,
  );
}
if (replay) {
  targets.push(
    `| ≤ 256 MiB RSS with ${fmt(TARGET_NONCES)} nonces | ${mib(nonceTotalKib)} at ${fmt(replay.result.remembered)} | ` +
      `${verdict(replay.result.remembered === TARGET_NONCES ? nonceTotalKib <= 256 * 1024 : null)} |`,
  );
}
p(
  '## Targets',
  '',
  'Ratios within this run. "n/a" where the run measured less than the target names (fewer',
  'connections, nonces, routes or concurrent requests: smoke runs).',
  '',
  '| target | measured | |',
  '| --- | ---: | --- |',
  ...targets,
  '',
);
const flagged = Object.entries(summary).filter(([, s]) => s.problems.length);
if (flagged.length) {
  p('**Flagged runs** (their numbers are not trustworthy):', '');
  for (const [k, s] of flagged) p(`- ${k.replace('@', ' c=')}: ${[...new Set(s.problems)].join('; ')}`);
  p('');
}
if (opt.notes && existsSync(opt.notes)) p(readFileSync(opt.notes, 'utf8').trimEnd(), '');
process.stdout.write(out.join('\n'));
