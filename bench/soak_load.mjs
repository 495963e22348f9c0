// The soak run's load generator (bench/soak.sh): paid requests at a fixed rate, alternating
// between the replicas, each with a fresh pre-signed payment (bench_payments' file, one
// PAYMENT-SIGNATURE per line), plus now and then a replay of a payment that was already delivered,
// sent to the other replica, and a burst of replays to both replicas whenever a killed part is
// back (a line {"event":"back"} in --events: bench/soak.sh's chaos timeline), when what the
// replicas remember is most likely to have gone. Meanwhile it samples each replica's RSS and open
// descriptors.
//
//   node bench/soak_load.mjs --replicas http://A,http://B --payments FILE --rate 30 --duration 60
//     --out DIR --pids DIR [--events FILE] [--replay-every 5] [--timeout 20]
//
// A paid request whose connection broke (a replica killed) is sent again once, a second later, to
// the other replica, as a buyer who got no answer would.
// Writes DIR/requests.jsonl (one line per request: {i, kind: paid|replay|retry, of, replica, nonce,
// start, end, status, error, delivered, bytes, receipt, tx}), DIR/samples.jsonl (once a second:
// {t, replicas: {a: {pid, rss_kib, fds}, ...}}) and DIR/load.json (start time, counts). The pid
// of replica `a` is read from DIR(pids)/a.pid at each sample, so restarts are followed.
// The requests are open-loop: request i leaves at start + i/rate whatever the others are doing.
import { appendFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from '../tests/support/util.mjs';

const args = parseArgs(process.argv.slice(2));
for (const need of ['replicas', 'payments', 'rate', 'duration', 'out', 'pids']) {
  if (!args[need]) {
    console.error(`soak_load: --${need} is required`);
    process.exit(2);
  }
}
const replicas = String(args.replicas).split(',');
const names = replicas.map((_, k) => String.fromCharCode(97 + k)); // a, b, ...
const rate = Number(args.rate);
const durationMs = Number(args.duration) * 1000;
const replayEveryMs = Number(args['replay-every'] ?? 5) * 1000;
const timeoutMs = Number(args.timeout ?? 20) * 1000;
const out = args.out;
const payments = readFileSync(args.payments, 'utf8').split('\n').filter(Boolean);
const nonceOf = (header) => JSON.parse(Buffer.from(header, 'base64').toString('utf8')).payload.authorization.nonce;

const requestsFile = `${out}/requests.jsonl`;
const samplesFile = `${out}/samples.jsonl`;
writeFileSync(requestsFile, '');
writeFileSync(samplesFile, '');

function decodeReceipt(header) {
  if (!header) return null;
  try {
    return JSON.parse(Buffer.from(header, 'base64').toString('utf8'));
  } catch {
    return { unreadable: true };
  }
}

const delivered = []; // {i, header, replica} of delivered payments, for replays
let inFlight = 0;
let paidSent = 0;
let replaysSent = 0;
let retriesSent = 0;
let stopping = false;
const RETRY_BASE = 10_000_000; // request numbers of retries

async function send({ i, kind, of = null, header, replica, after = null }) {
  const record = { i, kind, of, replica: names[replica], nonce: nonceOf(header), start: Date.now() };
  if (after) record.after = after;
  inFlight++;
  try {
    const res = await fetch(`${replicas[replica]}/paid?soak=${i}`, {
      headers: { 'payment-signature': header },
      signal: AbortSignal.timeout(timeoutMs),
    });
    const body = await res.text();
    record.status = res.status;
    record.bytes = body.length;
    if (res.status >= 400) {
      try {
        record.error = JSON.parse(body).error ?? null;
      } catch {
        record.error = null;
      }
    }
    const receipt = decodeReceipt(res.headers.get('payment-response'));
    record.receipt = receipt !== null;
    record.receiptSuccess = receipt?.success ?? null;
    record.tx = receipt?.transaction || null;
    record.delivered = res.status >= 200 && res.status < 300 && body.length > 0;
    if (record.delivered && kind !== 'replay') delivered.push({ i, header, replica, at: Date.now() });
  } catch (err) {
    record.status = 0;
    const cause = err?.cause?.code ?? err?.name ?? 'error';
    record.error = cause === 'TimeoutError' ? 'client_timeout' : `connection:${cause}`;
    record.delivered = false;
    record.receipt = false;
    // A buyer whose connection broke does not know what became of its payment: it sends the same
    // payment again, a second later, to the other replica.
    if (kind === 'paid' && cause !== 'TimeoutError' && !stopping) {
      setTimeout(() => {
        retriesSent++;
        send({ i: RETRY_BASE + retriesSent, kind: 'retry', of: i, header, replica: (replica + 1) % replicas.length });
      }, 1000);
    }
  } finally {
    inFlight--;
  }
  record.end = Date.now();
  appendFileSync(requestsFile, `${JSON.stringify(record)}\n`);
}

function sample() {
  const line = { t: Date.now(), replicas: {} };
  for (const name of names) {
    const entry = { pid: null, rss_kib: null, fds: null };
    try {
      entry.pid = Number(readFileSync(`${args.pids}/${name}.pid`, 'utf8').trim());
      const status = readFileSync(`/proc/${entry.pid}/status`, 'utf8');
      entry.rss_kib = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
      entry.fds = readdirSync(`/proc/${entry.pid}/fd`).length;
    } catch {
      // not running (killed, restarting): no sample
    }
    line.replicas[name] = entry;
  }
  appendFileSync(samplesFile, `${JSON.stringify(line)}\n`);
}

const start = Date.now();
writeFileSync(`${out}/load.json`, JSON.stringify({ start, rate, durationMs, replicas: names }));
process.stdout.write(`${JSON.stringify({ ready: true, start })}\n`);

const sampler = setInterval(sample, 1000);
sample();

// Replays: every replayEveryMs, a payment delivered at least a second ago, sent to the other
// replica than the one that served it (the newest such payment and, every other time, an old one).
let replayTurn = 0;
const replayer = setInterval(() => {
  let ready = delivered.length;
  while (ready > 0 && delivered[ready - 1].at > Date.now() - 1000) ready--;
  if (ready === 0) return;
  let pick = ready - 1;
  if (replayTurn++ % 2 === 1) pick = Math.floor(Math.random() * ready);
  const d = delivered[pick];
  const other = (d.replica + 1) % replicas.length;
  replaysSent++;
  send({ i: payments.length + replaysSent, kind: 'replay', of: d.i, header: d.header, replica: other });
}, replayEveryMs);

// After every restart: replays of two payments delivered before the part went down (the newest
// and a random older one), each to both replicas.
let eventsSeen = 0;
const watcher = setInterval(() => {
  if (!args.events) return;
  let lines;
  try {
    lines = readFileSync(args.events, 'utf8').split('\n').filter(Boolean);
  } catch {
    return;
  }
  const all = lines.map((l) => JSON.parse(l));
  for (let k = eventsSeen; k < all.length; k++) {
    const e = all[k];
    if (e.event !== 'back') continue;
    const down = all.slice(0, k).reverse().find((d) => d.part === e.part && d.event === 'down');
    const before = delivered.filter((d) => d.at < (down?.t ?? e.t) - 1000);
    if (before.length === 0) continue;
    const picks = [before[before.length - 1], before[Math.floor(Math.random() * before.length)]];
    for (const d of picks) {
      for (let replica = 0; replica < replicas.length; replica++) {
        replaysSent++;
        send({ i: payments.length + replaysSent, kind: 'replay', of: d.i, header: d.header, replica, after: e.part });
      }
    }
  }
  eventsSeen = lines.length;
}, 200);

let exhausted = false;
await new Promise((resolve) => {
  let i = 0;
  const next = () => {
    const elapsed = Date.now() - start;
    if (elapsed >= durationMs) return resolve();
    // every request due by now leaves now (after a stall, the backlog is sent at once)
    while (i * 1000 < elapsed * rate) {
      if (i >= payments.length) {
        exhausted = true;
        return resolve();
      }
      send({ i, kind: 'paid', header: payments[i], replica: i % replicas.length });
      paidSent++;
      i++;
    }
    const due = start + (i * 1000) / rate;
    setTimeout(next, Math.max(0, due - Date.now()));
  };
  next();
});
clearInterval(replayer);
clearInterval(watcher);
// retries already scheduled still leave (a second after their failure); none after that
await new Promise((r) => setTimeout(r, 1100));
stopping = true;
const stoppedAt = Date.now();
while (inFlight > 0 && Date.now() - stoppedAt < timeoutMs + 5000) await new Promise((r) => setTimeout(r, 50));
clearInterval(sampler);
sample();
const summary = { start, end: Date.now(), rate, durationMs, replicas: names, paidSent, replaysSent, retriesSent, exhausted, leftInFlight: inFlight };
writeFileSync(`${out}/load.json`, JSON.stringify(summary));
process.stdout.write(`${JSON.stringify({ done: true, ...summary })}\n`);
process.exit(exhausted || inFlight > 0 ? 1 : 0);
