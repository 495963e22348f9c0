// The soak run's report and checks (bench/soak.sh): reads what the load generator, the stubs, the
// chaos timeline and the ledger recorded in DIR, prints a table per 10 s and ok/FAIL per check,
// writes DIR/report.md and DIR/soak.svg, and exits 1 when a check fails.
//
//   node bench/soak_report.mjs --dir DIR [--command CMD] [--warmup SECONDS] [--load-status N]
//
// The checks are about money, not availability (refusals while a part is down are expected):
//   1. no delivery without a settlement: every paid answer the client got (2xx with a body) was
//      settled at the facilitator, and every settlement that delivered nothing (a replica killed
//      mid-request) is recorded in the ledger as a payment whose outcome needs looking at;
//   2. no payment delivered twice: each authorization reached the upstream, was settled and was
//      delivered at most once, and every replay of a delivered payment was refused;
//   3. no receipt lost: every delivered answer carried a PAYMENT-RESPONSE naming the facilitator's
//      transaction, and that transaction is a settled payment in the ledger (`receipts`);
//   4. memory and descriptors flat: for each replica, the median RSS and descriptor count of the
//      last quarter of the run at most 1.5× those of the first quarter after warm-up (compared with
//      at least 64 MiB and 128 descriptors, so that small numbers do not trip it: the descriptors
//      follow the connections to the upstream and the facilitator, which a stall of the machine
//      multiplies for a few seconds).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { parseArgs } from '../tests/support/util.mjs';

// viem from the npm packages of tests/ (`npm ci --prefix tests`)
const { keccak256, toBytes } = createRequire(new URL('../tests/package.json', import.meta.url))('viem');

const args = parseArgs(process.argv.slice(2));
const dir = args.dir;
const warmupS = Number(args.warmup ?? 10);
const BUCKET_MS = 10_000;
const RSS_FLOOR_KIB = 64 * 1024;
const FDS_FLOOR = 128;
const GROWTH = 1.5;

const jsonl = (name) =>
  existsSync(`${dir}/${name}`)
    ? readFileSync(`${dir}/${name}`, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
    : [];
const load = JSON.parse(readFileSync(`${dir}/load.json`, 'utf8'));
const requests = jsonl('requests.jsonl');
const samples = jsonl('samples.jsonl');
const events = jsonl('events.jsonl');
const hits = jsonl('upstream.jsonl');
const facilitatorCalls = jsonl('facilitator.jsonl');
const ledger = readFileSync(`${dir}/ledger.tsv`, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => {
    const [id, key, state, transaction, reason] = l.split('\t');
    return { id, key, state, transaction, reason };
  });
const receipts = existsSync(`${dir}/receipts.json`) ? JSON.parse(readFileSync(`${dir}/receipts.json`, 'utf8') || '[]') : [];
const duplicateEvents = Number(readFileSync(`${dir}/ledger-duplicates.txt`, 'utf8').trim() || 0);
const payments = readFileSync(`${dir}/payments.txt`, 'utf8').split('\n').filter(Boolean);

const start = load.start;
const rel = (t) => (t - start) / 1000;
const fmt = (n) => n.toLocaleString('en-US');
const pct = (a, b) => (b === 0 ? '–' : `${((100 * a) / b).toFixed(1)} %`);
const median = (xs) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const inc = (map, k, by = 1) => map.set(k, (map.get(k) ?? 0) + by);
const shortCode = (r) => {
  if (!r.status) return r.error === 'client_timeout' ? 'timeout' : `conn ${(r.error ?? '').replace('connection:', '')}`;
  return `${r.status} ${r.error ?? ''}`.trim();
};
const refusalText = (m) => [...m].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${n} × ${c}`).join(', ');

// ---- what happened to each payment -----------------------------------------------------------
const paid = requests.filter((r) => r.kind === 'paid');
const replays = requests.filter((r) => r.kind === 'replay');
// Retries: the same payment sent again after a broken connection; delivered at most once in all.
const retries = requests.filter((r) => r.kind === 'retry');
const buys = [...paid, ...retries];
const byI = new Map(requests.map((r) => [r.i, r]));
// The ledger's key of an authorization, as the gateway computes it (src/payment/replay.rs).
const keyOf = new Map();
for (let i = 0; i < payments.length && i < load.paidSent; i++) {
  const p = JSON.parse(Buffer.from(payments[i], 'base64').toString('utf8'));
  const a = p.payload.authorization;
  keyOf.set(a.nonce, keccak256(toBytes(`${p.accepted.network}|${p.accepted.asset}|${a.from}|${a.nonce}`.toLowerCase())).slice(2));
}
const ledgerByKey = new Map(ledger.map((row) => [row.key, row]));
const ledgerTx = new Map();
for (const row of ledger) if (row.transaction) inc(ledgerTx, row.transaction.toLowerCase());
const receiptByTx = new Map(receipts.filter((r) => r.transaction).map((r) => [r.transaction.toLowerCase(), r]));

const settles = new Map(); // nonce → successful settlements
const settleTx = new Map();
const settleAttempts = new Map();
// Replays the gateway let through to the facilitator: a /verify of an authorization settled before.
let replaysAtFacilitator = 0;
const settledSoFar = new Set();
for (const c of facilitatorCalls) {
  if (c.op === 'verify' && settledSoFar.has(c.nonce)) replaysAtFacilitator++;
  if (c.op === 'settle' && c.ok) settledSoFar.add(c.nonce);
  if (c.op === 'settle') {
    inc(settleAttempts, c.nonce);
    if (c.ok) {
      inc(settles, c.nonce);
      settleTx.set(c.nonce, c.tx.toLowerCase());
    }
  }
}
const hitsByNonce = new Map();
let hitsUnknown = 0;
for (const h of hits) {
  const r = byI.get(Number(h.id));
  if (r) inc(hitsByNonce, r.nonce);
  else hitsUnknown++;
}
const deliveriesByNonce = new Map();
for (const r of requests) if (r.delivered) inc(deliveriesByNonce, r.nonce);

const checks = [];
const check = (name, ok, detail, problems = []) => checks.push({ name, ok, detail, problems: problems.slice(0, 10) });

// 1. no delivery without a settlement (or a recorded unknown outcome)
{
  const problems = [];
  const delivered = buys.filter((r) => r.delivered);
  for (const r of delivered) {
    const row = ledgerByKey.get(keyOf.get(r.nonce));
    if (!settles.get(r.nonce) && row?.state !== 'pending') problems.push(`request ${r.i} delivered by ${r.replica} without a settlement (ledger: ${row?.state ?? 'no row'})`);
    if (!hitsByNonce.get(r.nonce)) problems.push(`request ${r.i} delivered without an upstream hit`);
  }
  // Settled, nothing delivered (a replica killed between the settlement and its answer, a client
  // that gave up): the buyer paid, so the ledger must hold the payment as settled or as an outcome
  // to look at, never as not charged.
  let settledUndelivered = 0;
  const undeliveredStates = new Map();
  for (const r of paid) {
    if (deliveriesByNonce.get(r.nonce) || !settles.get(r.nonce)) continue;
    settledUndelivered++;
    const row = ledgerByKey.get(keyOf.get(r.nonce));
    inc(undeliveredStates, row?.state ?? 'no row');
    if (!row || !['settled', 'pending', 'verified'].includes(row.state)) {
      problems.push(`request ${r.i} (${r.replica}, ${r.status} ${r.error ?? ''}) was settled, not delivered, and the ledger says ${row?.state ?? 'nothing'}`);
    }
  }
  const states = [...undeliveredStates].map(([s, n]) => `${n} ${s}`).join(', ');
  // Sent to the upstream, not delivered: nothing may have been charged unless recorded.
  const hitStates = new Map();
  for (const r of paid) {
    if (deliveriesByNonce.get(r.nonce) || !hitsByNonce.get(r.nonce)) continue;
    inc(hitStates, `${settles.get(r.nonce) ? 'settled' : 'not settled'}, ledger ${ledgerByKey.get(keyOf.get(r.nonce))?.state ?? 'no row'}`);
  }
  const hitText = [...hitStates].map(([s, n]) => `${n} ${s}`).join('; ');
  check(
    '1. no delivery without a settlement',
    problems.length === 0,
    `${fmt(delivered.length)} deliveries, each settled at the facilitator; ${fmt(settledUndelivered)} settled and not delivered${states ? ` (ledger: ${states})` : ''}; ` +
      `sent upstream and not delivered: ${hitText || 'none'}`,
    problems,
  );
}

// 2. no payment delivered twice; every replay refused
{
  const problems = [];
  const twice = (map, what) => {
    for (const [nonce, n] of map) if (n > 1) problems.push(`${nonce.slice(0, 18)}… ${what} ${n} times`);
  };
  twice(deliveriesByNonce, 'delivered');
  twice(hitsByNonce, 'reached the upstream');
  twice(settles, 'settled');
  const replayDelivered = replays.filter((r) => r.delivered || (r.status >= 200 && r.status < 300));
  for (const r of replayDelivered) problems.push(`replay ${r.i} of request ${r.of} answered ${r.status} by ${r.replica}`);
  const codes = new Map();
  for (const r of replays) inc(codes, r.status ? `${r.status} ${r.error ?? ''}`.trim() : r.error);
  check(
    '2. no payment delivered twice',
    problems.length === 0 && replays.length > 0,
    `${fmt(replays.length)} replays of delivered payments, all refused (${[...codes].map(([c, n]) => `${n} × ${c}`).join(', ') || 'none sent'}); ` +
      `${fmt(retries.length)} payments sent again after a broken connection (${refusalText(retries.reduce((m, r) => inc(m, r.delivered ? 'delivered' : shortCode(r)) && m, new Map())) || 'none'}); ` +
      `no authorization delivered, sent upstream or settled twice; ${replaysAtFacilitator} replays reached the facilitator`,
    replays.length === 0 ? ['no replay was sent'] : problems,
  );
}

// 3. no receipt lost
{
  const problems = [];
  const delivered = buys.filter((r) => r.delivered);
  let inLedger = 0;
  for (const r of delivered) {
    if (!r.receipt || !r.tx) {
      problems.push(`request ${r.i} delivered by ${r.replica} without a PAYMENT-RESPONSE transaction`);
      continue;
    }
    const tx = r.tx.toLowerCase();
    if (settleTx.get(r.nonce) && settleTx.get(r.nonce) !== tx) problems.push(`request ${r.i}: receipt ${tx} but the facilitator settled ${settleTx.get(r.nonce)}`);
    const receipt = receiptByTx.get(tx);
    if (!receipt || receipt.state !== 'settled') problems.push(`request ${r.i}: receipt ${tx.slice(0, 18)}… is ${receipt ? receipt.state : 'missing'} in the ledger`);
    else inLedger++;
  }
  for (const [tx, n] of ledgerTx) if (n > 1) problems.push(`transaction ${tx} in ${n} ledger rows`);
  if (duplicateEvents > 0) problems.push(`${duplicateEvents} journal events recorded twice`);
  check(
    '3. no receipt lost',
    problems.length === 0,
    `${fmt(inLedger)} of ${fmt(delivered.length)} delivered receipts settled in the ledger (${fmt(receipts.length)} rows, ${fmt(receipts.filter((r) => r.state === 'settled').length)} settled)`,
    problems,
  );
}

// 4. memory and descriptors flat
const durationS = load.durationMs / 1000;
const quarter = (durationS - warmupS) / 4;
const firstQ = [warmupS, warmupS + quarter];
const lastQ = [durationS - quarter, durationS];
const flat = [];
{
  const problems = [];
  for (const name of load.replicas) {
    const series = samples.map((s) => ({ t: rel(s.t), ...s.replicas[name] })).filter((s) => s.rss_kib !== null && !Number.isNaN(s.rss_kib));
    const within = ([a, b], field) => series.filter((s) => s.t >= a && s.t < b).map((s) => s[field]);
    for (const [field, floor, unit] of [['rss_kib', RSS_FLOOR_KIB, 'KiB'], ['fds', FDS_FLOOR, 'fds']]) {
      const first = median(within(firstQ, field));
      const last = median(within(lastQ, field));
      if (first === null || last === null) {
        problems.push(`${name}: no ${field} samples in a quarter`);
        continue;
      }
      const ratio = last / Math.max(first, floor);
      flat.push({ name, field, first, last, ratio, peak: Math.max(...series.map((s) => s[field])) });
      if (ratio > GROWTH) problems.push(`${name} ${field}: ${first} → ${last} ${unit} (${ratio.toFixed(2)}×)`);
    }
  }
  const show = (f) => (f.field === 'rss_kib' ? `${(f.first / 1024).toFixed(1)} → ${(f.last / 1024).toFixed(1)} MiB` : `${f.first} → ${f.last} fds`);
  check(
    '4. memory and descriptors flat',
    problems.length === 0,
    `median of the first quarter after warm-up → the last quarter: ${flat.map((f) => `${f.name} ${show(f)}`).join(', ')}`,
    problems,
  );
}

// ---- over time -------------------------------------------------------------------------------------
const windows = [];
for (const e of events.filter((e) => e.event === 'down')) {
  const back = events.find((b) => b.part === e.part && b.event === 'back' && b.t >= e.t);
  windows.push({ part: e.part, down: e.t, back: back?.t ?? null });
}
const buckets = [];
const nBuckets = Math.ceil(load.durationMs / BUCKET_MS);
for (let b = 0; b < nBuckets; b++) {
  buckets.push({ t: (b * BUCKET_MS) / 1000, requests: 0, delivered: 0, receipts: 0, settlements: 0, replays: 0, refusals: new Map(), latencies: [], retries: 0, retriesDelivered: 0, rss: {}, fds: {}, events: [] });
}
const bucketOf = (t) => buckets[Math.min(nBuckets - 1, Math.max(0, Math.floor((t - start) / BUCKET_MS)))];
for (const r of paid) {
  const b = bucketOf(r.start);
  b.requests++;
  if (r.delivered) {
    b.delivered++;
    b.latencies.push(r.end - r.start);
  } else inc(b.refusals, shortCode(r));
  if (r.delivered && r.tx) b.receipts++;
}
for (const r of replays) bucketOf(r.start).replays++;
for (const r of retries) {
  bucketOf(r.start).retries++;
  if (r.delivered) bucketOf(r.start).retriesDelivered++;
}
for (const c of facilitatorCalls) if (c.op === 'settle' && c.ok && c.t >= start) bucketOf(c.t).settlements++;
for (const e of events) bucketOf(e.t).events.push(`${e.part} ${e.event}`);
for (const b of buckets) {
  for (const name of load.replicas) {
    const within = samples.filter((s) => rel(s.t) >= b.t && rel(s.t) < b.t + BUCKET_MS / 1000).map((s) => s.replicas[name]).filter((x) => x.rss_kib !== null && !Number.isNaN(x.rss_kib));
    b.rss[name] = median(within.map((x) => x.rss_kib));
    b.fds[name] = median(within.map((x) => x.fds));
  }
}

// Availability, and how long each part took to serve again once it was back.
const delivered = paid.filter((r) => r.delivered).length;
const GRACE_MS = 5000;
// A request in flight when a part was killed counts as in its window, as do the few seconds after
// the restart.
const inWindow = (r) => windows.some((w) => r.end >= w.down && r.start < (w.back ?? Infinity) + GRACE_MS);
const outside = paid.filter((r) => !inWindow(r));
const outsideRefused = outside.filter((r) => !r.delivered);
const recoveries = windows.map((w) => {
  const replica = w.part.startsWith('replica-') ? w.part.slice(8) : null;
  const first = paid.find((r) => r.delivered && r.start >= (w.back ?? Infinity) && (!replica || r.replica === replica));
  const during = paid.filter((r) => r.end >= w.down && r.start < (w.back ?? Infinity));
  const codes = new Map();
  for (const r of during) if (!r.delivered) inc(codes, shortCode(r));
  const servedDuring = during.filter((r) => r.delivered).length;
  const replayCodes = new Map();
  for (const r of replays) {
    if (r.after === w.part && w.back && r.start >= w.back && r.start < w.back + 5000) inc(replayCodes, shortCode(r));
  }
  return {
    replayCodes,
    part: w.part,
    at: rel(w.down),
    down: w.back ? (w.back - w.down) / 1000 : null,
    firstDelivery: first ? (first.start - w.back) / 1000 : null,
    during: during.length,
    servedDuring,
    codes,
  };
});

// ---- output ----------------------------------------------------------------------------------------
const mib = (kib) => (kib === null || kib === undefined ? '–' : (kib / 1024).toFixed(1));
const lines = [];
lines.push(`Load: ${fmt(paid.length)} paid requests at ${load.rate}/s for ${durationS} s, alternating replicas ${load.replicas.join(' and ')}, plus ${fmt(replays.length)} replays;`);
lines.push(`delivered ${fmt(delivered)} (${pct(delivered, paid.length)} availability; outside the kill windows and ${GRACE_MS / 1000} s after them: ${fmt(outside.length - outsideRefused.length)} of ${fmt(outside.length)}, ${pct(outside.length - outsideRefused.length, outside.length)}).`);
if (outsideRefused.length) {
  const m = new Map();
  for (const r of outsideRefused) inc(m, shortCode(r));
  lines.push(`Refused outside the kill windows: ${refusalText(m)}.`);
}
lines.push(`Facilitator: ${fmt(facilitatorCalls.filter((c) => c.op === 'settle' && c.ok).length)} settlements, ${fmt(facilitatorCalls.filter((c) => c.op === 'settle').length)} settle calls; upstream: ${fmt(hits.length)} hits${hitsUnknown ? ` (${hitsUnknown} not from this run's requests)` : ''}; ledger: ${fmt(ledger.length)} payments (${[...ledger.reduce((m, r) => inc(m, r.state) && m, new Map())].map(([s, n]) => `${fmt(n)} ${s}`).join(', ')}).`);
if (load.exhausted) lines.push('The run ran out of pre-signed payments before its end.');
if (load.leftInFlight) lines.push(`${load.leftInFlight} requests were still in flight when the load generator gave up on them.`);
if (Number(args['load-status'] ?? 0) !== 0) lines.push(`The load generator exited with ${args['load-status']}.`);

const percentile = (xs, q) => {
  if (xs.length === 0) return '–';
  const sorted = [...xs].sort((a, b) => a - b);
  return String(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]);
};
const table = [];
const names = load.replicas;
table.push(`| t (s) | requests | delivered | p50 / p99 (ms) | receipts | settlements | retried (delivered) | replays | refused (status error × count) | ${names.map((n) => `RSS ${n} (MiB)`).join(' | ')} | ${names.map((n) => `fds ${n}`).join(' | ')} | events |`);
table.push(`| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ${names.map(() => '---:').join(' | ')} | ${names.map(() => '---:').join(' | ')} | --- |`);
for (const b of buckets) {
  table.push(
    `| ${b.t} | ${b.requests} | ${b.delivered} | ${percentile(b.latencies, 0.5)} / ${percentile(b.latencies, 0.99)} | ${b.receipts} | ${b.settlements} | ${b.retries ? `${b.retries} (${b.retriesDelivered})` : 0} | ${b.replays} | ${refusalText(b.refusals).replaceAll(' × ', '×') || ''} | ${names.map((n) => mib(b.rss[n])).join(' | ')} | ${names.map((n) => b.fds[n] ?? '–').join(' | ')} | ${b.events.join(', ')} |`,
  );
}
const recoveryTable = [
  '| part | killed at (s) | down (s) | paid requests meanwhile (in flight or sent) | delivered meanwhile | refused meanwhile | first delivery after restart (s) | replays of earlier payments just after |',
  '| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |',
  ...recoveries.map(
    (r) =>
      `| ${r.part} | ${r.at.toFixed(1)} | ${r.down?.toFixed(1) ?? '–'} | ${r.during} | ${r.servedDuring} | ${refusalText(r.codes) || '–'} | ${r.firstDelivery?.toFixed(2) ?? 'never'} | ${refusalText(r.replayCodes) || '–'} |`,
  ),
];
const checkLines = checks.map((c) => `- **${c.ok ? 'ok' : 'FAIL'}** ${c.name}: ${c.detail}${c.problems.length ? `\n${c.problems.map((p) => `  - ${p}`).join('\n')}` : ''}`);

// From the replicas' logs: panics, and the records kept in the local spool while the database
// was down and moved to it afterwards.
const logOf = (n) => {
  const file = `${dir}/logs/replica-${n}.log`;
  return existsSync(file) ? readFileSync(file, 'utf8').replace(/\x1b\[[0-9;]*m/g, '') : '';
};
const panics = load.replicas.map((n) => (logOf(n).match(/panicked/g) ?? []).length);
const spooled = load.replicas.map((n) => (logOf(n).match(/record spooled/g) ?? []).length);
const drained = load.replicas.map((n) =>
  logOf(n)
    .split('\n')
    .filter((l) => l.includes('spooled journal records moved'))
    .reduce((a, l) => a + Number(/records=(\d+)/.exec(l)?.[1] ?? 0), 0),
);
lines.push(`Spool: records written to a replica's local spool while the database was down: ${load.replicas.map((n, k) => `${n} ${spooled[k]}`).join(', ')}; moved into the database afterwards: ${load.replicas.map((n, k) => `${n} ${drained[k]}`).join(', ')}.`);

const md = [
  `Command: \`${args.command ?? 'bash bench/soak.sh'}\``,
  '',
  ...lines,
  panics.some((n) => n > 0) ? `\nPanics in the replicas' logs: ${load.replicas.map((n, k) => `${n} ${panics[k]}`).join(', ')}.` : '',
  '',
  '### Over time (10 s buckets)',
  '',
  ...table,
  '',
  '### Each outage',
  '',
  ...recoveryTable,
  '',
  '### Checks',
  '',
  ...checkLines,
  '',
].join('\n');
writeFileSync(`${dir}/report.md`, md);

// ---- SVG: requests and deliveries per bucket, RSS and descriptors of each replica --------------------
function svg() {
  const W = 900;
  const H = 560;
  const left = 60;
  const right = W - 60;
  const panels = [
    { title: 'paid requests and deliveries per 10 s', top: 30, series: [['requests', '#999', (b) => b.requests], ['delivered', '#2a7', (b) => b.delivered]] },
    { title: 'RSS (MiB), median per 10 s', top: 210, series: names.map((n, k) => [`replica ${n}`, ['#36c', '#c63'][k % 2], (b) => (b.rss[n] ?? null) && b.rss[n] / 1024]) },
    { title: 'open descriptors, median per 10 s', top: 390, series: names.map((n, k) => [`replica ${n}`, ['#36c', '#c63'][k % 2], (b) => b.fds[n] ?? null]) },
  ];
  const ph = 130;
  const x = (t) => left + ((right - left) * t) / durationS;
  const out = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  for (const w of windows) {
    const a = x(rel(w.down));
    const b = x(rel(w.back ?? start + load.durationMs));
    out.push(`<rect x="${a.toFixed(1)}" y="20" width="${Math.max(1, b - a).toFixed(1)}" height="${H - 40}" fill="#f3d0d0" opacity="0.6"/>`);
    out.push(`<text x="${a.toFixed(1)}" y="${H - 8}" fill="#a33">${w.part}</text>`);
  }
  for (const p of panels) {
    const values = buckets.flatMap((b) => p.series.map(([, , f]) => f(b))).filter((v) => v !== null && v !== undefined);
    const max = Math.max(1, ...values) * 1.1;
    const y = (v) => p.top + ph - (ph * v) / max;
    out.push(`<text x="${left}" y="${p.top - 6}" font-weight="bold">${p.title}</text>`);
    out.push(`<line x1="${left}" y1="${p.top + ph}" x2="${right}" y2="${p.top + ph}" stroke="#333"/><line x1="${left}" y1="${p.top}" x2="${left}" y2="${p.top + ph}" stroke="#333"/>`);
    out.push(`<text x="${left - 4}" y="${p.top + 4}" text-anchor="end">${max.toFixed(0)}</text><text x="${left - 4}" y="${p.top + ph}" text-anchor="end">0</text>`);
    p.series.forEach(([label, color, f], k) => {
      const pts = buckets.map((b) => [x(b.t + BUCKET_MS / 2000), f(b)]).filter(([, v]) => v !== null && v !== undefined);
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.map(([a, v]) => `${a.toFixed(1)},${y(v).toFixed(1)}`).join(' ')}"/>`);
      out.push(`<text x="${right - 150 + k * 75}" y="${p.top - 6}" fill="${color}">${label}</text>`);
    });
  }
  for (let t = 0; t <= durationS; t += Math.max(10, Math.round(durationS / 10 / 10) * 10)) out.push(`<text x="${x(t).toFixed(1)}" y="${390 + ph + 14}" text-anchor="middle">${t} s</text>`);
  out.push('</svg>');
  return out.join('\n');
}
writeFileSync(`${dir}/soak.svg`, svg());

process.stdout.write(`${md}\nReport: ${dir}/report.md, plot: ${dir}/soak.svg\n`);
const failed = checks.filter((c) => !c.ok);
process.stdout.write(failed.length ? `soak: FAIL (${failed.map((c) => c.name).join('; ')})\n` : 'soak: ok, every check passed\n');
process.exit(failed.length || load.exhausted ? 1 : 0);
