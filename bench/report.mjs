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
  ['gateway_free', 'gateway, free route `GET /free`'],
  ['gateway_402', 'gateway, unpaid priced route → 402'],
  ['gateway_paid', 'gateway, paid route (fresh payment per request; verify → proxy → settle)'],
  ['express_paid', '`@x402/express` 2.27.0, same paid route and stub facilitator'],
];
const TARGET_CONNS = 5000;
const TARGET_NONCES = 1_000_000;

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
  if (r.workload === 'gateway_402') {
    // wrk counts every status ≥ 400 as an error: here every answer must be one (the 402).
    if (w.status_errors < w.requests * 0.999) problems.push(`only ${w.status_errors} of ${w.requests} were 4xx`);
  } else if (w.status_errors > w.requests * 0.001) {
    problems.push(`${w.status_errors} non-2xx of ${w.requests}`);
  }
  if (socketErrors > w.requests * 0.001) problems.push(`${socketErrors} socket errors/timeouts`);
  if (w.exhausted > 0) problems.push('ran out of pre-signed payments (raise PAID_RATE_CAP)');
  return {
    rps: w.requests / seconds,
    p50: w.p50_us,
    p99: w.p99_us,
    cpu: w.requests ? ((r.cpu_ticks / r.clk_tck) * 1e6) / w.requests : NaN,
    hwm: r.hwm_kib,
    nonOk: r.workload === 'gateway_402' ? w.requests - w.status_errors : w.status_errors,
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
  'What the paywall costs per request: the gateway against a plain Pingora passthrough proxy and',
  'against the official `@x402/express` middleware, all in one run on one machine, on loopback, in',
  'front of the same tiny upstream (`examples/bench_upstream.rs`) and the same stub facilitator',
  '(`examples/bench_facilitator.rs`, which approves and settles instantly: this measures the gateway,',
  'not a chain).',
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
  '',
  '## Throughput, latency, CPU and memory',
  '',
  'CPU is the server process\'s user+system time (from `/proc/PID/stat`) during the measured run divided',
  'by the requests completed; peak RSS is `VmHWM` at the end of the run (highest over repetitions).',
  'The gateway logs one line per payment (its default `info` level), included in its cost.',
  '',
  '| workload | c | requests/s | × baseline | p50 | p99 | CPU / request | peak RSS | check |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
);
for (const c of concurrencies) {
  for (const [workload, label] of WORKLOADS) {
    const s = get(workload, c);
    if (!s) continue;
    const base = get('baseline', c);
    const check = s.problems.length ? `**FLAGGED**: ${[...new Set(s.problems)].join('; ')}` : 'ok';
    p(
      `| ${label} | ${c} | ${fmt(s.rps)} | ${workload === 'baseline' ? '1.00' : fmt(ratio(s, base), 2)} | ` +
        `${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.cpu)} | ${mib(s.hwm)} | ${check} |`,
    );
  }
}
p(
  '',
  '"check": paid runs must be answered 200 (wrk\'s non-2xx count ≈ 0, no payment header reused),',
  'the unpaid run must be answered 402 throughout.',
  '',
);

// ---- memory -------------------------------------------------------------------------------------
const conns = records.find((r) => r.memory === 'idle_connections' && r.server === 'gateway');
const baseConns = records.find((r) => r.memory === 'idle_connections' && r.server === 'baseline');
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

// ---- profile ------------------------------------------------------------------------------------
const profile = records.find((r) => r.profile === 'callgrind');
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
for (const c of concurrencies) {
  const base = get('baseline', c);
  const add = (name, value, ok) => targets.push(`| ${name} (c=${c}) | ${value} | ${verdict(ok)} |`);
  const free = ratio(get('gateway_free', c), base);
  add('free route ≥ 0.95× baseline requests/s', `${fmt(free, 3)}×`, Number.isFinite(free) ? free >= 0.95 : null);
  const unpaid = ratio(get('gateway_402', c), base);
  add('402 ≥ 3× baseline requests/s', `${fmt(unpaid, 3)}×`, Number.isFinite(unpaid) ? unpaid >= 3 : null);
  const paid = ratio(get('gateway_paid', c), base);
  add('paid ≥ 0.5× baseline requests/s', `${fmt(paid, 3)}×`, Number.isFinite(paid) ? paid >= 0.5 : null);
  const vsExpress = ratio(get('gateway_paid', c), get('express_paid', c));
  add('paid ≥ 10× `@x402/express` requests/s', `${fmt(vsExpress, 1)}×`, Number.isFinite(vsExpress) ? vsExpress >= 10 : null);
  const cpu = get('gateway_paid', c)?.cpu;
  add('gateway CPU ≤ 60 µs per paid request', ms(cpu), Number.isFinite(cpu) ? cpu <= 60 : null);
}
if (conns) {
  targets.push(
    `| ≤ 64 MiB RSS at ${fmt(TARGET_CONNS)} keep-alive connections | ${mib(conns.rss_kib)} at ${fmt(conns.connections)} | ` +
      `${verdict(conns.connections === TARGET_CONNS ? conns.rss_kib <= 64 * 1024 : null)} |`,
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
  'From issue 7; ratios within this run. "n/a" where the run measured fewer connections or nonces',
  'than the target names (smoke runs).',
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
