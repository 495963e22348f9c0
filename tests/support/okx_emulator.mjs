// An OKX Onchain OS Payment facilitator, as the gateway sees it: the current API
// (/api/v6/pay/x402/{verify,settle,supported}, GET /settle/status) and the legacy one
// (/api/v6/x402/{verify,settle,supported}), the {code,msg,data} envelope, and the OK-ACCESS-*
// HMAC authentication checked like the real service (missing header 5010x, wrong key 50111,
// stale or malformed timestamp 50112, wrong passphrase 50105, wrong signature 50113).
// Signatures are verified for real. Settlement is simulated (a random transaction hash per
// payment) unless --rpc and --signer are given: then `exact` payments are settled on that chain with
// the token's transferWithAuthorization, and the transaction hash is the real one.
//
// Control endpoints (unauthenticated, under /__): calls, last bodies and headers, modes, clock
// skew and credential rotation, so tests can make it answer pending, timeout-then-success,
// failed, rate-limited or garbage.
import http from 'node:http';
import { createHmac, randomBytes } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { chainSettler } from './chain_settler.mjs';
import { createChecker } from './evm_check.mjs';
import { exitWithParent, parseArgs, printReady, readBody, sendJson } from './util.mjs';

const V2 = '/api/v6/pay/x402';
const LEGACY = '/api/v6/x402';
const ENDPOINTS = ['verify', 'settle', 'status', 'supported'];
// settle: normal | failed | timeout-success | timeout-failed | timeout-pending | refuse
// any:    normal | invalid (verify) | refuse | ratelimit:N | ratelimit | garbage | http500 | hang | numeric-code
const MAX_SKEW_MS = 30_000;

function envelope(data, code = '0', msg = 'success') {
  return { code, msg, data };
}

export function createOkxEmulator({ key, secret, passphrase, networks, chain }) {
  const settleOnChain = chain ? chainSettler(chain) : null;
  const creds = { key, secret, passphrase };
  const checker = createChecker();
  const state = {};
  const txs = new Map(); // txHash -> remaining status sequence (the last one sticks)

  function reset() {
    state.calls = Object.fromEntries(ENDPOINTS.map((e) => [e, 0]));
    state.modes = Object.fromEntries(ENDPOINTS.map((e) => [e, 'normal']));
    state.last = Object.fromEntries(ENDPOINTS.map((e) => [e, null]));
    state.headers = null;
    state.authFailures = [];
    state.skewMs = 0;
  }
  reset();

  function authError(res, code, msg) {
    state.authFailures.push(code);
    return sendJson(res, 401, { code, msg, data: null });
  }

  // The real service's order of checks: presence, key, timestamp, passphrase, signature.
  function authenticate(req, pathWithQuery, body, res) {
    const h = req.headers;
    if (!h['ok-access-key']) return authError(res, '50103', 'Request header OK-ACCESS-KEY can not be empty.');
    if (!h['ok-access-passphrase']) return authError(res, '50104', 'Request header OK-ACCESS-PASSPHRASE can not be empty.');
    if (!h['ok-access-sign']) return authError(res, '50106', 'Request header OK-ACCESS-SIGN can not be empty.');
    if (!h['ok-access-timestamp']) return authError(res, '50107', 'Request header OK-ACCESS-TIMESTAMP can not be empty.');
    if (h['ok-access-key'] !== creds.key) return authError(res, '50111', 'Invalid OK-ACCESS-KEY.');
    const ts = h['ok-access-timestamp'];
    const when = Date.parse(ts);
    if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(ts) || Number.isNaN(when)) {
      return authError(res, '50112', 'Invalid OK-ACCESS-TIMESTAMP.');
    }
    if (Math.abs(Date.now() + state.skewMs - when) > MAX_SKEW_MS) return authError(res, '50112', 'Timestamp request expired.');
    if (h['ok-access-passphrase'] !== creds.passphrase) return authError(res, '50105', 'OK-ACCESS-PASSPHRASE incorrect.');
    const expected = createHmac('sha256', creds.secret).update(ts + req.method + pathWithQuery + body).digest('base64');
    if (h['ok-access-sign'] !== expected) return authError(res, '50113', 'Invalid Sign.');
    return true;
  }

  function supported(legacy) {
    if (legacy) {
      return networks.map((n) => ({ x402Version: 1, scheme: 'exact', chainIndex: n.slice(7), chainName: n === 'eip155:196' ? 'X Layer' : n }));
    }
    const kinds = networks.flatMap((network) => [
      { x402Version: 2, scheme: 'exact', network, extra: null },
      { x402Version: 2, scheme: 'aggr_deferred', network, extra: null },
    ]);
    return { kinds, extensions: [], signers: { 'eip155:*': ['0x000000000000000000000000000000000000fac1'] } };
  }

  // Legacy bodies carry v1 requirements and chainIndex; read them in v2 terms.
  function fromLegacy(body) {
    const r = body?.paymentRequirements;
    const p = body?.paymentPayload;
    if (!r || !p || body.x402Version !== 1 || typeof body.chainIndex !== 'string' || !r.maxAmountRequired || typeof r.resource !== 'string') {
      return null;
    }
    const network = `eip155:${body.chainIndex}`;
    return {
      payload: { x402Version: 1, accepted: { scheme: p.scheme, network }, payload: p.payload },
      requirements: { scheme: r.scheme, network, amount: r.maxAmountRequired, asset: r.asset, payTo: r.payTo, extra: r.extra },
    };
  }

  async function verify(body, legacy) {
    const parsed = legacy ? fromLegacy(body) : { payload: body?.paymentPayload, requirements: body?.paymentRequirements };
    if (!parsed?.payload || !parsed?.requirements) return { error: ['50014', 'Parameter paymentPayload or paymentRequirements can not be empty'] };
    const r = await checker.check(parsed.payload, parsed.requirements);
    return { result: r, parsed };
  }

  function settleOutcome(mode, scheme, sync) {
    if (scheme === 'aggr_deferred') return { status: 'success', withTx: false, plan: null };
    if (mode === 'failed') return { failed: true };
    if (mode === 'timeout-success') return { status: 'timeout', withTx: true, plan: ['pending', 'success'] };
    if (mode === 'timeout-failed') return { status: 'timeout', withTx: true, plan: ['failed'] };
    if (mode === 'timeout-pending') return { status: 'timeout', withTx: true, plan: ['pending'] };
    return sync ? { status: 'success', withTx: true, plan: ['success'] } : { status: 'pending', withTx: true, plan: ['pending', 'success'] };
  }

  async function handle(endpoint, legacy, req, res, url, rawBody) {
    state.calls[endpoint]++;
    let body = null;
    if (rawBody) {
      try {
        body = JSON.parse(rawBody);
      } catch {
        body = rawBody;
      }
    }
    state.last[endpoint] = endpoint === 'status' ? Object.fromEntries(url.searchParams) : body;
    let mode = state.modes[endpoint];
    const limited = /^ratelimit(?::(\d+))?$/.exec(mode);
    if (limited) {
      if (limited[1] !== undefined) {
        const left = Number(limited[1]) - 1;
        state.modes[endpoint] = left > 0 ? `ratelimit:${left}` : 'normal';
      }
      return sendJson(res, 429, { code: '50011', msg: 'Too Many Requests', data: null });
    }
    if (mode === 'hang') return;
    if (mode === 'http500') return sendJson(res, 500, { code: '50026', msg: 'System error, please try again later', data: null });
    if (mode === 'garbage') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end('{"code":"0","data":{"isValid":tru');
    }
    const code0 = mode === 'numeric-code' ? 0 : '0';
    const ok = (data) => sendJson(res, 200, envelope(legacy ? [data].flat() : data, code0));
    if (mode === 'refuse') {
      return sendJson(res, 200, envelope(null, '30001', 'invalid signature, nonce_used'));
    }
    // a duplicate inside OKX's cache window: the first settlement may still land
    if (mode === 'processing') return sendJson(res, 200, envelope(null, '30002', 'payment processing'));

    if (endpoint === 'supported') return ok(supported(legacy));
    if (endpoint === 'status') {
      const tx = url.searchParams.get('txHash');
      const plan = txs.get(tx);
      if (!plan) return ok({ success: false, errorReason: 'not_found', errorMessage: `Transaction not found for txHash: ${tx}`, status: '', transaction: tx ?? '' });
      const status = plan.length > 1 ? plan.shift() : plan[0];
      return ok({ success: status !== 'failed', status, transaction: tx, errorReason: status === 'failed' ? 'onchain_error' : null, network: 'eip155:196' });
    }

    if (!body || typeof body !== 'object') return sendJson(res, 200, envelope(null, '50014', 'Request body can not be empty'));
    const v = await verify(body, legacy);
    if (v.error) return sendJson(res, 200, envelope(null, v.error[0], v.error[1]));
    const { result, parsed } = v;
    const network = parsed.requirements.network;
    const chain = { chainIndex: network.slice(7), chainName: network === 'eip155:196' ? 'X Layer' : network };

    if (endpoint === 'verify') {
      if (mode === 'invalid') return ok({ isValid: false, invalidReason: 'insufficient_balance', invalidMessage: 'payer balance is too low', payer: result.payer });
      const data = result.isValid
        ? { isValid: true, invalidReason: null, invalidMessage: null, payer: result.payer }
        : { isValid: false, invalidReason: result.invalidReason, invalidMessage: result.invalidMessage, payer: result.payer };
      return ok(legacy ? { ...data, ...chain } : data);
    }

    // settle
    const failure = (errorReason, errorMessage) =>
      legacy
        ? ok({ success: false, errorReason, payer: result.payer, txHash: '', ...chain })
        : ok({ success: false, errorReason, errorMessage, payer: result.payer, transaction: '', network, status: '' });
    if (!result.isValid) return failure(result.invalidReason, result.invalidMessage);
    if (typeof body.syncSettle !== 'boolean' && parsed.requirements.scheme === 'exact') {
      // the gateway promises to always send it; the real service would default it
      return sendJson(res, 200, envelope(null, '51000', 'Parameter syncSettle error'));
    }
    const outcome = settleOutcome(mode, parsed.requirements.scheme, body.syncSettle === true);
    if (outcome.failed) return failure('insufficient_balance', 'payer balance is too low');
    if (mode === 'onchain_error') return failure('onchain_error', 'broadcast failed, retry');
    let tx = '';
    if (outcome.withTx && settleOnChain && parsed.requirements.scheme === 'exact') {
      try {
        tx = await settleOnChain(parsed.payload, parsed.requirements);
      } catch (err) {
        return failure('onchain_error', String(err?.shortMessage ?? err?.message ?? err));
      }
    } else if (outcome.withTx) {
      tx = `0x${randomBytes(32).toString('hex')}`;
    }
    checker.markUsed(result.key);
    if (tx && outcome.plan) txs.set(tx, [...outcome.plan]);
    if (legacy) return ok({ success: true, errorReason: null, payer: result.payer, txHash: tx, ...chain });
    return ok({ success: true, errorReason: null, errorMessage: null, payer: result.payer, transaction: tx, network, status: outcome.status });
  }

  async function control(path, req, res) {
    if (path === '/__calls') return sendJson(res, 200, state.calls);
    if (path === '/__headers') return sendJson(res, 200, state.headers);
    if (path === '/__auth_failures') return sendJson(res, 200, state.authFailures);
    if (path === '/__reset' && req.method === 'POST') {
      reset();
      return sendJson(res, 200, {});
    }
    if (path === '/__mode' && req.method === 'POST') {
      const wanted = JSON.parse((await readBody(req)).toString('utf8') || '{}');
      for (const [e, m] of Object.entries(wanted)) {
        if (e === 'skewMs') state.skewMs = Number(m);
        else if (ENDPOINTS.includes(e)) state.modes[e] = m;
        else return sendJson(res, 400, { error: `unknown endpoint ${e}` });
      }
      return sendJson(res, 200, state.modes);
    }
    if (path === '/__creds' && req.method === 'POST') {
      Object.assign(creds, JSON.parse((await readBody(req)).toString('utf8') || '{}'));
      return sendJson(res, 200, {});
    }
    const lastOf = /^\/__last\/(verify|settle|status)$/.exec(path);
    if (lastOf) return sendJson(res, 200, state.last[lastOf[1]]);
    return sendJson(res, 404, { error: 'not found' });
  }

  return http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://emulator');
    const path = url.pathname;
    try {
      if (path.startsWith('/__')) return await control(path, req, res);
      const raw = (await readBody(req)).toString('utf8');
      const legacy = path.startsWith(`${LEGACY}/`);
      const prefix = legacy ? LEGACY : V2;
      const rest = path.startsWith(`${prefix}/`) ? path.slice(prefix.length) : null;
      const route = {
        'POST /verify': 'verify',
        'POST /settle': 'settle',
        'GET /supported': 'supported',
        'GET /settle/status': legacy ? null : 'status',
      }[`${req.method} ${rest}`];
      if (!route) return sendJson(res, 404, { code: '404', msg: 'Not Found', data: null });
      state.headers = { ...req.headers };
      if (authenticate(req, req.url, raw, res) !== true) return;
      if (req.method === 'POST' && !String(req.headers['content-type'] ?? '').startsWith('application/json')) {
        return sendJson(res, 200, envelope(null, '50014', 'Content-Type must be application/json'));
      }
      return await handle(route, legacy, req, res, url, raw);
    } catch (err) {
      if (!res.headersSent) sendJson(res, 500, { code: '50026', msg: err?.message ?? String(err), data: null });
    }
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = parseArgs(process.argv.slice(2));
  const server = createOkxEmulator({
    key: args.key ?? 'okx-test-key',
    secret: args.secret ?? 'okx-test-secret',
    passphrase: args.passphrase ?? 'okx-test-passphrase',
    networks: String(args.networks ?? 'eip155:196').split(','),
    chain: args.rpc ? { rpc: args.rpc, signer: args.signer, chainId: Number(args['chain-id'] ?? 196) } : null,
  });
  server.listen(Number(args.port ?? 0), '127.0.0.1', () => printReady({ ready: true, port: server.address().port }));
  process.on('SIGTERM', () => process.exit(0));
  exitWithParent();
}
