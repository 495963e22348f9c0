// Proves the rig without the gateway: official buyer → official express seller → official
// facilitator → FiatTokenV2_2 on anvil. If this fails, an e2e failure is not the gateway's fault.
import assert from 'node:assert/strict';
import express from 'express';
import { paymentMiddleware, x402ResourceServer } from '@x402/express';
import { HTTPFacilitatorClient } from '@x402/core/server';
import { ExactEvmScheme } from '@x402/evm/exact/server';
import { createPublicClient, http } from 'viem';
import { anvilChain, tokenAbi } from './chain.mjs';
import { runJson, startReady } from './proc.mjs';

const PRICE = 10000n;
const t0 = performance.now();
const ms = (since) => `${Math.round(performance.now() - since)} ms`;
const procs = [];
let seller;

try {
  let t = performance.now();
  const chain = await startReady('chain.mjs', ['--port', '0']);
  procs.push(chain);
  const info = chain.info;
  console.log(`chain ready in ${ms(t)} (${info.rpc}, token ${info.token})`);

  t = performance.now();
  const fac = await startReady('facilitator.mjs', ['--port', '0', '--rpc', info.rpc, '--key', info.facilitatorKey]);
  procs.push(fac);
  const facUrl = `http://127.0.0.1:${fac.info.port}`;
  console.log(`facilitator ready in ${ms(t)}`);

  const network = 'eip155:84532';
  const resourceServer = new x402ResourceServer(new HTTPFacilitatorClient({ url: facUrl })).register(network, new ExactEvmScheme());
  const routes = {
    'GET /paid': {
      accepts: {
        scheme: 'exact',
        network,
        payTo: info.payTo,
        price: { amount: PRICE.toString(), asset: info.token, extra: { name: 'USDC', version: '2' } },
      },
      description: 'paid data',
      mimeType: 'application/json',
    },
  };
  const app = express();
  app.use(paymentMiddleware(routes, resourceServer));
  app.get('/paid', (_req, res) => res.json({ data: 'secret' }));
  seller = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const url = `http://127.0.0.1:${seller.address().port}/paid`;

  const unpaid = await fetch(url);
  assert.equal(unpaid.status, 402);
  assert.ok(unpaid.headers.get('payment-required'), 'express 402 carries PAYMENT-REQUIRED');

  const publicClient = createPublicClient({ chain: anvilChain(info.rpc), transport: http(info.rpc) });
  const balance = (address) => publicClient.readContract({ address: info.token, abi: tokenAbi, functionName: 'balanceOf', args: [address] });
  const before = await balance(info.payTo);

  t = performance.now();
  const paid = await runJson('client_v2.mjs', ['--url', url, '--key', info.buyers[0].key, '--rpc', info.rpc]);
  console.log(`one v2 payment (client process included) in ${ms(t)}`);
  assert.equal(paid.error, undefined, paid.error);
  assert.equal(paid.status, 200, paid.body);
  assert.deepEqual(JSON.parse(paid.body), { data: 'secret' });
  assert.equal(paid.paymentResponse?.success, true);

  const receipt = await publicClient.getTransactionReceipt({ hash: paid.paymentResponse.transaction });
  assert.equal(receipt.status, 'success');
  assert.equal((await balance(info.payTo)) - before, PRICE);
  console.log(`v2 OK: tx ${paid.paymentResponse.transaction} block ${receipt.blockNumber}`);

  // v1: a minimal hand-written seller, since the official middleware speaks v2 only
  app.get('/paid-v1', async (req, res) => {
    const requirements = {
      scheme: 'exact', network: 'base-sepolia', maxAmountRequired: PRICE.toString(), resource: `${url}-v1`,
      description: 'paid data', mimeType: 'application/json', payTo: info.payTo, maxTimeoutSeconds: 120,
      asset: info.token, extra: { name: 'USDC', version: '2' },
    };
    const header = req.get('x-payment');
    if (!header) return res.status(402).json({ x402Version: 1, error: 'X-PAYMENT header is required', accepts: [requirements] });
    const body = JSON.stringify({ x402Version: 1, paymentPayload: JSON.parse(Buffer.from(header, 'base64').toString()), paymentRequirements: requirements });
    const post = (path) => fetch(`${facUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => r.json());
    const verified = await post('/verify');
    if (!verified.isValid) return res.status(402).json({ x402Version: 1, error: verified.invalidReason, accepts: [requirements] });
    const settled = await post('/settle');
    res.set('x-payment-response', Buffer.from(JSON.stringify(settled)).toString('base64'));
    res.json({ data: 'secret-v1', settled: settled.success });
  });
  t = performance.now();
  const paidV1 = await runJson('client_v1.mjs', ['--url', `${url}-v1`, '--key', info.buyers[1].key]);
  console.log(`one v1 payment (client process included) in ${ms(t)}`);
  assert.equal(paidV1.error, undefined, paidV1.error);
  assert.equal(paidV1.status, 200, paidV1.body);
  assert.equal(paidV1.paymentResponse?.success, true, JSON.stringify(paidV1.paymentResponse));
  assert.equal(paidV1.paymentResponse.network, 'base-sepolia');
  const receiptV1 = await publicClient.getTransactionReceipt({ hash: paidV1.paymentResponse.transaction });
  assert.equal(receiptV1.status, 'success');
  assert.equal((await balance(info.payTo)) - before, 2n * PRICE);
  console.log(`sanity OK in ${ms(t0)}: v1 tx ${paidV1.paymentResponse.transaction}`);
} catch (err) {
  console.error('sanity FAILED:', err);
  for (const p of procs) console.error(p.stderr());
  process.exitCode = 1;
} finally {
  seller?.close();
  seller?.closeAllConnections?.();
  await Promise.all(procs.map((p) => p.stop()));
}
