// A standard x402 facilitator over HTTP (/verify, /settle, /supported) with fault injection.
// With --rpc it wraps the official @x402 facilitator and moves real tokens on the local chain;
// without it, an offline stand-in performs the same exact-EVM checks and fakes settlement.
//   node support/facilitator.mjs --port 0 [--rpc URL --key 0xFACILITATORKEY [--upto] [--batch-authorizer-key 0xKEY]]
//   → {"ready":true,"port":N}
// --upto also registers the official `upto` scheme (it needs the chain started with --upto).
// --batch-authorizer-key also registers the official `batch-settlement` scheme, with that key as its
// receiver authorizer (advertised in /supported as `extra.receiverAuthorizer`; it signs claim
// batches and refunds for sellers that delegate); it needs the chain started with --batch.
// Control: POST /__mode {verify|settle|supported: normal|invalid|http500|garbage|wrongshape|slow|hang
//   | http500valid (HTTP 500 claiming success) | pending500 (HTTP 500 settlement_pending, as the Coinbase
//   facilitator answers a receipt timeout) | pending500once (that, then the real settlement) | otherpayer |
//   othernetwork | otheramount (a success that contradicts the payment; verify: otherpayer only)
//   | bazaarrejected (the normal answer, saying in an EXTENSION-RESPONSES header and an `extensions`
//   field that the catalog rejected the payment's listing)};
//   settle also `pending`:
//   HTTP 500 `settlement_pending` on every call (the resend in `normal` mode settles),
// GET /__calls, GET /__times, GET /__last/verify|settle, GET /__bodies/verify|settle (raw, in order), POST /__reset.
import http from 'node:http';
import { pathToFileURL } from 'node:url';
import { createWalletClient, http as viemHttp, keccak256, publicActions, verifyTypedData } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { exitWithParent, parseArgs, printReady, readBody, sendJson, sleep } from './util.mjs';

const ENDPOINTS = ['verify', 'settle', 'supported'];
const MODES = [
  'normal', 'invalid', 'http500', 'garbage', 'wrongshape', 'slow', 'hang',
  // ambiguous or lying answers
  'http500valid', 'pending500', 'pending500once', 'otherpayer', 'othernetwork', 'otheramount', 'pending',
  // extension reports beside a normal answer
  'bazaarrejected',
];
const V1_CHAIN_IDS = { base: 8453, 'base-sepolia': 84532 };

export async function officialFacilitator({ rpc, key, upto = false, batchAuthorizerKey = null }) {
  const { x402Facilitator } = await import('@x402/core/facilitator');
  const { registerExactEvmScheme } = await import('@x402/evm/exact/facilitator');
  const { toFacilitatorEvmSigner } = await import('@x402/evm');
  const { anvilChain } = await import('./chain.mjs');

  const account = privateKeyToAccount(key);
  const wallet = createWalletClient({ account, chain: anvilChain(rpc), transport: viemHttp(rpc) }).extend(publicActions);
  const signer = toFacilitatorEvmSigner({ ...wallet, address: account.address });
  const facilitator = new x402Facilitator();
  // also registers the v1 network names (base-sepolia, ...) against the same signer
  registerExactEvmScheme(facilitator, { signer, networks: 'eip155:84532' });
  if (upto) {
    // only on request: it adds an `upto` kind to /supported, which the exact-only tests do not expect
    const { UptoEvmScheme } = await import('@x402/evm/upto/facilitator');
    facilitator.register('eip155:84532', new UptoEvmScheme(signer));
  }
  if (batchAuthorizerKey) {
    // only on request, like upto: a `batch-settlement` kind in /supported would change what
    // existing rigs see. A viem account is the `{address, signTypedData}` the scheme asks for.
    const { BatchSettlementEvmScheme } = await import('@x402/evm/batch-settlement/facilitator');
    facilitator.register('eip155:84532', new BatchSettlementEvmScheme(signer, privateKeyToAccount(batchAuthorizerKey)));
  }
  return {
    verify: (payload, requirements) => facilitator.verify(payload, requirements),
    settle: (payload, requirements) => facilitator.settle(payload, requirements),
    supported: async () => facilitator.getSupported(),
  };
}

function chainIdOf(network) {
  if (typeof network === 'string' && network.startsWith('eip155:')) return Number(network.slice(7));
  return V1_CHAIN_IDS[network];
}

const AUTH_TYPES = {
  TransferWithAuthorization: [
    { name: 'from', type: 'address' },
    { name: 'to', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'validAfter', type: 'uint256' },
    { name: 'validBefore', type: 'uint256' },
    { name: 'nonce', type: 'bytes32' },
  ],
};

export function offlineFacilitator() {
  const settled = new Set();

  async function check(payload, req) {
    const v1 = payload?.x402Version === 1;
    const accepted = v1 ? payload : payload?.accepted;
    const auth = payload?.payload?.authorization;
    const signature = payload?.payload?.signature;
    const payer = auth?.from ?? '';
    const fail = (invalidReason) => ({ isValid: false, invalidReason, payer });
    if (!accepted || !auth || !signature || !req) return fail('invalid_payload');
    if (accepted.scheme !== 'exact' || req.scheme !== 'exact') return fail('invalid_exact_evm_scheme');
    if (accepted.network !== req.network) return fail('invalid_exact_evm_network_mismatch');
    if (!req.extra?.name || !req.extra?.version) return fail('invalid_exact_evm_missing_eip712_domain');
    const chainId = chainIdOf(req.network);
    if (!chainId) return fail('invalid_network');

    const domain = { name: req.extra.name, version: req.extra.version, chainId, verifyingContract: req.asset };
    let ok = false;
    try {
      const message = { ...auth, value: BigInt(auth.value), validAfter: BigInt(auth.validAfter), validBefore: BigInt(auth.validBefore) };
      ok = await verifyTypedData({ address: auth.from, domain, types: AUTH_TYPES, primaryType: 'TransferWithAuthorization', message, signature });
    } catch {
      ok = false;
    }
    if (!ok) return fail('invalid_exact_evm_signature');
    if (String(auth.to).toLowerCase() !== String(req.payTo).toLowerCase()) return fail('invalid_exact_evm_recipient_mismatch');
    const now = BigInt(Math.floor(Date.now() / 1000));
    if (BigInt(auth.validBefore) < now + 6n) return fail('invalid_exact_evm_payload_authorization_valid_before');
    if (BigInt(auth.validAfter) > now) return fail('invalid_exact_evm_payload_authorization_valid_after');
    const required = v1 ? req.maxAmountRequired : req.amount;
    if (BigInt(auth.value) !== BigInt(required)) return fail('invalid_exact_evm_authorization_value');
    const nonceKey = `${chainId}:${req.asset}:${auth.from}:${auth.nonce}`.toLowerCase();
    if (settled.has(nonceKey)) return fail('invalid_exact_evm_nonce_already_used');
    return { isValid: true, payer, nonceKey, nonce: auth.nonce };
  }

  return {
    async verify(payload, req) {
      const { isValid, invalidReason, payer } = await check(payload, req);
      return isValid ? { isValid, payer } : { isValid, invalidReason, payer };
    },
    async settle(payload, req) {
      const r = await check(payload, req);
      const network = req?.network ?? '';
      if (!r.isValid) return { success: false, errorReason: r.invalidReason, payer: r.payer, transaction: '', network };
      // no await between the check above and this insert, so concurrent settles cannot both pass
      settled.add(r.nonceKey);
      return { success: true, payer: r.payer, transaction: keccak256(r.nonce), network };
    },
    async supported() {
      return {
        kinds: [
          { x402Version: 2, scheme: 'exact', network: 'eip155:84532' },
          { x402Version: 1, scheme: 'exact', network: 'base-sepolia' },
        ],
        extensions: [],
        signers: {},
      };
    },
  };
}

function invalidResult(endpoint, body) {
  const payer = body?.paymentPayload?.payload?.authorization?.from ?? '';
  if (endpoint === 'verify') return { isValid: false, invalidReason: 'insufficient_funds', payer };
  if (endpoint === 'settle') {
    const network = body?.paymentRequirements?.network ?? '';
    return { success: false, errorReason: 'insufficient_funds', payer, transaction: '', network };
  }
  return { kinds: [], extensions: [], signers: {} };
}

export function createFacilitatorServer(impl) {
  const calls = {};
  const modes = {};
  const last = {};
  const times = {};
  const bodies = {};
  const reset = () => {
    for (const e of ENDPOINTS) {
      calls[e] = 0;
      modes[e] = 'normal';
      last[e] = null;
      times[e] = null;
      bodies[e] = [];
    }
  };
  reset();

  async function handle(endpoint, req, res) {
    calls[endpoint]++;
    // when the last call arrived and was answered, to order it against upstream hits
    const time = { receivedAt: Date.now(), answeredAt: null };
    times[endpoint] = time;
    // stamped before the bytes leave: 'finish' can fire after the caller already acted on them
    const end = res.end.bind(res);
    res.end = (...args) => {
      time.answeredAt = Date.now();
      return end(...args);
    };
    let body = null;
    if (endpoint !== 'supported') {
      const raw = (await readBody(req)).toString('utf8');
      bodies[endpoint].push(raw);
      try {
        body = JSON.parse(raw);
      } catch {
        body = raw;
      }
      last[endpoint] = body;
    }
    const mode = modes[endpoint];
    if (mode === 'hang') return; // the socket stays open until the caller gives up
    if (mode === 'slow') await sleep(10_000);
    if (mode === 'http500') return sendJson(res, 500, { error: 'boom' });
    if (mode === 'garbage') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end('not json{');
    }
    if (mode === 'wrongshape') return sendJson(res, 200, { hello: 1 });
    if (mode === 'invalid') return sendJson(res, 200, invalidResult(endpoint, body));
    const payer = body?.paymentPayload?.payload?.authorization?.from ?? '';
    if (mode === 'http500valid') {
      return sendJson(res, 500, endpoint === 'verify' ? { isValid: true, payer } : { success: true, payer, transaction: `0x${'ab'.repeat(32)}`, network: body?.paymentRequirements?.network });
    }
    if (endpoint === 'settle' && (mode === 'pending500' || mode === 'pending500once')) {
      const nonce = body?.paymentPayload?.payload?.authorization?.nonce ?? '0x';
      const transaction = keccak256(nonce);
      // the second identical request finds the transaction already broadcast
      const resent = bodies.settle.length >= 2 && bodies.settle.at(-1) === bodies.settle.at(-2);
      if (mode === 'pending500' || !resent) {
        return sendJson(res, 500, { success: false, errorReason: 'settlement_pending', payer, transaction, network: body?.paymentRequirements?.network });
      }
    }
    if (endpoint === 'verify' && mode === 'otherpayer') {
      // the real verdict, about someone else: a gateway must not take it for this payment's
      const answer = await impl.verify(body.paymentPayload, body.paymentRequirements);
      return sendJson(res, 200, { ...answer, payer: '0x0000000000000000000000000000000000000bad' });
    }
    if (endpoint === 'settle' && ['otherpayer', 'othernetwork', 'otheramount'].includes(mode)) {
      const answer = await impl.settle(body.paymentPayload, body.paymentRequirements);
      if (mode === 'otherpayer') answer.payer = '0x0000000000000000000000000000000000000bad';
      if (mode === 'othernetwork') answer.network = 'eip155:1';
      if (mode === 'otheramount') answer.amount = '1';
      return sendJson(res, 200, answer);
    }
    if (mode === 'pending' && endpoint === 'settle') {
      const nonce = body?.paymentPayload?.payload?.authorization?.nonce;
      const transaction = typeof nonce === 'string' ? keccak256(nonce) : '';
      const network = body?.paymentRequirements?.network ?? '';
      return sendJson(res, 500, { success: false, errorReason: 'settlement_pending', transaction, network });
    }

    if (mode === 'bazaarrejected' && endpoint !== 'supported') {
      const reports = { bazaar: { status: 'rejected', rejectedReason: 'listing refused by the test catalog' } };
      const answer = { ...(await impl[endpoint](body.paymentPayload, body.paymentRequirements)), extensions: reports };
      const text = JSON.stringify(answer, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
        'extension-responses': Buffer.from(JSON.stringify(reports)).toString('base64'),
      });
      return res.end(text);
    }
    if (endpoint === 'supported') return sendJson(res, 200, await impl.supported());
    if (!body || typeof body !== 'object' || !body.paymentPayload || !body.paymentRequirements) {
      return sendJson(res, 400, { error: 'Missing paymentPayload or paymentRequirements' });
    }
    return sendJson(res, 200, await impl[endpoint](body.paymentPayload, body.paymentRequirements));
  }

  async function control(path, req, res) {
    if (path === '/__calls') return sendJson(res, 200, calls);
    if (path === '/__times') return sendJson(res, 200, times);
    if (path === '/__reset' && req.method === 'POST') {
      reset();
      return sendJson(res, 200, { modes });
    }
    if (path === '/__mode' && req.method === 'POST') {
      const wanted = JSON.parse((await readBody(req)).toString('utf8') || '{}');
      for (const [e, m] of Object.entries(wanted)) {
        if (!ENDPOINTS.includes(e) || !MODES.includes(m)) return sendJson(res, 400, { error: `bad mode ${e}=${m}` });
      }
      Object.assign(modes, wanted);
      return sendJson(res, 200, { modes });
    }
    if (path === '/__mode') return sendJson(res, 200, { modes });
    const bodiesOf = /^\/__bodies\/(verify|settle)$/.exec(path);
    if (bodiesOf) return sendJson(res, 200, bodies[bodiesOf[1]]);
    const lastOf = /^\/__last\/(verify|settle)$/.exec(path);
    if (lastOf) return sendJson(res, 200, last[lastOf[1]]);
    return sendJson(res, 404, { error: 'not found' });
  }

  return http.createServer(async (req, res) => {
    const path = req.url.split('?')[0];
    try {
      if (path.startsWith('/__')) return await control(path, req, res);
      if (req.method === 'POST' && (path === '/verify' || path === '/settle')) return await handle(path.slice(1), req, res);
      if (req.method === 'GET' && path === '/supported') return await handle('supported', req, res);
      return sendJson(res, 404, { error: 'not found' });
    } catch (err) {
      if (!res.headersSent) sendJson(res, 500, { error: err?.message ?? String(err) });
    }
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = parseArgs(process.argv.slice(2));
  if (args.rpc && !args.key) {
    console.error('--rpc needs --key (the facilitator signer private key)');
    process.exit(2);
  }
  if ((args.upto || args['batch-authorizer-key']) && !args.rpc) {
    console.error('--upto and --batch-authorizer-key need --rpc (the offline stand-in only knows exact)');
    process.exit(2);
  }
  const impl = args.rpc
    ? await officialFacilitator({ rpc: args.rpc, key: args.key, upto: args.upto === true, batchAuthorizerKey: args['batch-authorizer-key'] ?? null })
    : offlineFacilitator();
  const server = createFacilitatorServer(impl);
  server.listen(Number(args.port ?? 0), '127.0.0.1', () => printReady({ ready: true, port: server.address().port }));
  exitWithParent();
}
