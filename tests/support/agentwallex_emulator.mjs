// An AgentWallex x402 facilitator, as the gateway sees it: POST /api/v1/x402/facilitator/verify
// and /settle with standard x402 v2 bodies, GET /api/v1/x402/facilitator/supported and
// /api/v1/x402/fees/tiers, `X-API-Key` authentication, and the error contract
// {code, type, message}. Signatures are verified for real; settlement is batched (no transaction
// hash at settle time) unless told otherwise; with --rpc and --signer, immediate settlements move
// the token on that local chain.
//
// Control endpoints under /__: calls, last bodies and headers, and modes: deferred (default),
// immediate, wrapped, refuse, ratelimit[:N] (429 with Retry-After), forbidden, http500, garbage, hang.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { chainSettler } from './chain_settler.mjs';
import { pathToFileURL } from 'node:url';
import { createChecker } from './evm_check.mjs';
import { exitWithParent, parseArgs, printReady, readBody, sendJson } from './util.mjs';

const PREFIX = '/api/v1';
const ENDPOINTS = ['verify', 'settle', 'supported', 'fees'];
const TIERS = [
  { min_amount: '0', max_amount: '10', percentage: '2.0' },
  { min_amount: '10', max_amount: '100', percentage: '1.0' },
  { min_amount: '100', max_amount: '1000', percentage: '0.5' },
  { min_amount: '1000', max_amount: '', percentage: '0.25' },
];

const apiError = (res, status, code, type, message, headers = {}) => {
  const body = JSON.stringify({ code, type, message });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
};

export function createAgentWallexEmulator({ key, networks, retryAfter, chain }) {
  const settleOnChain = chain ? chainSettler(chain) : null;
  const checker = createChecker();
  const state = {};
  const reset = () => {
    state.calls = Object.fromEntries(ENDPOINTS.map((e) => [e, 0]));
    state.modes = Object.fromEntries(ENDPOINTS.map((e) => [e, 'normal']));
    state.last = Object.fromEntries(ENDPOINTS.map((e) => [e, null]));
    state.headers = null;
    state.wrapped = false;
  };
  reset();

  async function handle(endpoint, req, res, raw) {
    state.calls[endpoint]++;
    let body = null;
    try {
      body = raw ? JSON.parse(raw) : null;
    } catch {
      body = raw;
    }
    state.last[endpoint] = body;
    const mode = state.modes[endpoint];
    const limited = /^ratelimit(?::(\d+))?$/.exec(mode);
    if (limited) {
      if (limited[1] !== undefined) {
        const left = Number(limited[1]) - 1;
        state.modes[endpoint] = left > 0 ? `ratelimit:${left}` : 'normal';
      }
      return apiError(res, 429, 'rate_limit_exceeded', 'rate_limit_error', 'Too many requests', { 'retry-after': String(retryAfter) });
    }
    if (mode === 'hang') return;
    if (mode === 'forbidden') return apiError(res, 403, 'forbidden', 'authorization_error', 'This API key may not use the facilitator');
    if (mode === 'http500') return apiError(res, 500, 'internal_error', 'internal_error', 'Something went wrong');
    if (mode === 'garbage') {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end('<html>maintenance</html>');
    }
    if (mode === 'refuse') return apiError(res, 400, 'insufficient_funds', 'invalid_request_error', 'The agent wallet has insufficient funds');
    const ok = (data) => sendJson(res, 200, state.wrapped ? { code: 0, msg: 'success', data } : data);

    if (endpoint === 'fees') return ok({ tiers: TIERS });
    if (endpoint === 'supported') return ok({ kinds: networks.map((network) => ({ x402Version: 2, scheme: 'exact', network })) });
    if (!body || typeof body !== 'object' || body.x402Version !== 2 || !body.paymentPayload || !body.paymentRequirements) {
      return apiError(res, 400, 'invalid_request', 'invalid_request_error', 'x402Version 2, paymentPayload and paymentRequirements are required');
    }
    const r = await checker.check(body.paymentPayload, body.paymentRequirements);
    if (endpoint === 'verify') {
      return ok(r.isValid ? { isValid: true, payer: r.payer } : { isValid: false, invalidReason: r.invalidReason, payer: r.payer });
    }
    const network = body.paymentRequirements.network;
    if (!r.isValid) return ok({ success: false, errorReason: r.invalidReason, payer: r.payer, transaction: '', network });
    checker.markUsed(r.key);
    const ledgerId = `ldg_${randomBytes(6).toString('hex')}`;
    if (mode === 'immediate') {
      let transaction = `0x${randomBytes(32).toString('hex')}`;
      if (settleOnChain) {
        try {
          transaction = await settleOnChain(body.paymentPayload, body.paymentRequirements);
        } catch (err) {
          return apiError(res, 400, 'settlement_failed', 'invalid_request_error', String(err?.shortMessage ?? err?.message ?? err));
        }
      }
      return ok({ success: true, payer: r.payer, transaction, network, ledger_id: ledgerId });
    }
    // batched: on chain within the settlement interval, no hash yet
    return ok({ success: true, payer: r.payer, transaction: '', network, ledger_id: ledgerId });
  }

  async function control(path, req, res) {
    if (path === '/__calls') return sendJson(res, 200, state.calls);
    if (path === '/__headers') return sendJson(res, 200, state.headers);
    if (path === '/__mode' && req.method === 'POST') {
      const wanted = JSON.parse((await readBody(req)).toString('utf8') || '{}');
      for (const [e, m] of Object.entries(wanted)) {
        if (e === 'wrapped') state.wrapped = Boolean(m);
        else if (ENDPOINTS.includes(e)) state.modes[e] = m;
        else return sendJson(res, 400, { error: `unknown endpoint ${e}` });
      }
      return sendJson(res, 200, state.modes);
    }
    const lastOf = /^\/__last\/(verify|settle)$/.exec(path);
    if (lastOf) return sendJson(res, 200, state.last[lastOf[1]]);
    return sendJson(res, 404, { error: 'not found' });
  }

  return http.createServer(async (req, res) => {
    const path = new URL(req.url, 'http://emulator').pathname;
    try {
      if (path.startsWith('/__')) return await control(path, req, res);
      const raw = (await readBody(req)).toString('utf8');
      const route = {
        [`POST ${PREFIX}/x402/facilitator/verify`]: 'verify',
        [`POST ${PREFIX}/x402/facilitator/settle`]: 'settle',
        [`GET ${PREFIX}/x402/facilitator/supported`]: 'supported',
        [`GET ${PREFIX}/x402/fees/tiers`]: 'fees',
      }[`${req.method} ${path}`];
      if (!route) return apiError(res, 404, 'not_found', 'not_found_error', `No route ${req.method} ${path}`);
      state.headers = { ...req.headers };
      const presented = req.headers['x-api-key'];
      if (!presented) return apiError(res, 401, 'missing_api_key', 'authentication_error', 'Provide an API key in X-API-Key');
      if (presented !== key) return apiError(res, 401, 'invalid_api_key', 'authentication_error', 'The API key is not valid');
      return await handle(route, req, res, raw);
    } catch (err) {
      if (!res.headersSent) apiError(res, 500, 'internal_error', 'internal_error', err?.message ?? String(err));
    }
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = parseArgs(process.argv.slice(2));
  const server = createAgentWallexEmulator({
    key: args.key ?? 'awx_sk_test_emulator',
    networks: String(args.networks ?? 'eip155:84532,eip155:8453,eip155:1,eip155:137').split(','),
    retryAfter: Number(args['retry-after'] ?? 1),
    chain: args.rpc ? { rpc: args.rpc, signer: args.signer, chainId: Number(args['chain-id'] ?? 84532) } : null,
  });
  server.listen(Number(args.port ?? 0), '127.0.0.1', () => printReady({ ready: true, port: server.address().port }));
  process.on('SIGTERM', () => process.exit(0));
  exitWithParent();
}
