// The soak run's upstream and facilitator (bench/soak.sh), each logging what it did, one JSON line
// per event, so that the run can be checked against what really happened:
//
//   node bench/soak_stubs.mjs upstream --port 0 --log FILE [--delay-ms 100]
//     any GET answers 200 with a small JSON body after --delay-ms (an API taking its time, so
//     that a kill finds payments between their verification and their settlement); every hit is
//     logged {t, id, payer} (`id` is the request's `?soak=` query parameter, the load generator's
//     number for the payment)
//   node bench/soak_stubs.mjs facilitator --port 0 --log FILE
//     the offline stand-in of tests/support/facilitator.mjs (exact EVM checks, EIP-712 signature
//     included; the transaction is keccak256(nonce)); every /verify and /settle is logged
//     {t, op, nonce, ok, tx, reason}. /settle refuses an authorization it settled before, as the
//     chain refuses a used nonce; /verify does not know what was settled (as a facilitator whose
//     view of the chain lags), so that a replay the gateway lets through reaches the upstream and
//     shows. `--verify-sees-settled` makes /verify refuse settled authorizations too.
//
// Both print {"ready":true,"port":N} once listening and exit with their parent (stdin closing) or
// on SIGTERM. Lines are appended synchronously: a stub stopped at any moment has logged all it did.
import { appendFileSync } from 'node:fs';
import http from 'node:http';
import { offlineFacilitator } from '../tests/support/facilitator.mjs';
import { exitWithParent, parseArgs, printReady, readBody, sendJson, sleep } from '../tests/support/util.mjs';

const [kind, ...rest] = process.argv.slice(2);
const args = parseArgs(rest);
if (!['upstream', 'facilitator'].includes(kind) || !args.log) {
  console.error('usage: soak_stubs.mjs upstream|facilitator --port N --log FILE');
  process.exit(2);
}
const log = (event) => appendFileSync(args.log, `${JSON.stringify({ t: Date.now(), ...event })}\n`);
const counts = {};
const count = (name) => {
  counts[name] = (counts[name] ?? 0) + 1;
};

function upstream() {
  const filler = 'x'.repeat(512);
  const delayMs = Number(args['delay-ms'] ?? 0);
  return http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://upstream');
    if (url.pathname === '/__counts') return sendJson(res, 200, counts);
    req.resume();
    const id = url.searchParams.get('soak');
    count('hits');
    log({ id, path: url.pathname, payer: req.headers['x-payment-payer'] ?? null });
    if (delayMs > 0) await sleep(delayMs);
    sendJson(res, 200, { ok: true, id, data: filler });
  });
}

function facilitator() {
  const impl = offlineFacilitator();
  // A second stand-in that never settles anything answers /verify: it knows no used nonce.
  const verifier = args['verify-sees-settled'] ? impl : offlineFacilitator();
  return http.createServer(async (req, res) => {
    const path = req.url.split('?')[0];
    try {
      if (path === '/__counts') return sendJson(res, 200, counts);
      if (req.method === 'GET' && path === '/supported') return sendJson(res, 200, await impl.supported());
      if (req.method !== 'POST' || (path !== '/verify' && path !== '/settle')) return sendJson(res, 404, { error: 'not found' });
      const op = path.slice(1);
      const body = JSON.parse((await readBody(req)).toString('utf8'));
      const nonce = body?.paymentPayload?.payload?.authorization?.nonce ?? null;
      const answer = await (op === 'verify' ? verifier : impl)[op](body.paymentPayload, body.paymentRequirements);
      const ok = op === 'verify' ? answer.isValid === true : answer.success === true;
      count(`${op}_${ok ? 'ok' : 'refused'}`);
      log({ op, nonce, ok, tx: answer.transaction ?? null, reason: answer.invalidReason ?? answer.errorReason ?? null });
      return sendJson(res, 200, answer);
    } catch (err) {
      if (!res.headersSent) sendJson(res, 500, { error: err?.message ?? String(err) });
    }
  });
}

const server = kind === 'upstream' ? upstream() : facilitator();
server.keepAliveTimeout = 30_000;
server.listen(Number(args.port ?? 0), '127.0.0.1', () => printReady({ ready: true, port: server.address().port }));
exitWithParent();
