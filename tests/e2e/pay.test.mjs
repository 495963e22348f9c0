// The happy paths: the 402 challenge, free routes, and real payments by the official v2 and v1
// clients (and the project's own Rust buyer when built), each checked over HTTP and on chain.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { runJson } from '../support/proc.mjs';
import { b64json, paymentV2 } from '../support/sign.mjs';
import { PRICE, assertPaidOnChain, challenge, snapshot, useRig } from './rig.mjs';

const rig = useRig();
const sameAddress = (a, b) => assert.equal(String(a).toLowerCase(), String(b).toLowerCase());

describe('payments through the gateway', { timeout: 120000 }, () => {
  test('unpaid request gets a dual v2/v1 402 challenge and never reaches the upstream', async () => {
    const r = rig();
    const hits = await r.hits();
    const c = await challenge(r, '/paid');
    assert.equal(c.status, 402);

    assert.ok(c.v2, 'PAYMENT-REQUIRED header present');
    assert.equal(c.v2.x402Version, 2);
    assert.equal(c.v2.resource.url, r.url('/paid'));
    const [v2] = c.v2.accepts;
    assert.equal(v2.scheme, 'exact');
    assert.equal(v2.network, 'eip155:84532');
    assert.equal(v2.amount, PRICE.toString());
    sameAddress(v2.asset, r.token);
    sameAddress(v2.payTo, r.payTo);
    assert.equal(v2.maxTimeoutSeconds, 120);
    assert.deepEqual(v2.extra, { name: 'USDC', version: '2' });

    assert.ok(c.v1, `402 body is JSON: ${c.text}`);
    assert.equal(c.v1.x402Version, 1);
    assert.equal(typeof c.v1.error, 'string');
    const [v1] = c.v1.accepts;
    assert.equal(v1.network, 'base-sepolia');
    assert.equal(v1.maxAmountRequired, PRICE.toString());
    assert.equal(v1.resource, r.url('/paid'));
    assert.equal(v1.description, 'paid data');
    assert.equal(v1.mimeType, 'application/json');
    sameAddress(v1.payTo, r.payTo);
    sameAddress(v1.asset, r.token);

    assert.equal(await r.hits(), hits, 'upstream not called for a challenge');
  });

  test('unmatched route is proxied free', async () => {
    const r = rig();
    const before = await snapshot(r, r.buyers[0]);
    const res = await fetch(r.url('/free?x=1'));
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.path, '/free?x=1');
    assert.equal(await r.hits(), before.hits + 1);
    assert.deepEqual(await r.facCalls(), before.calls, 'no facilitator call for a free route');
  });

  test('official v2 client (@x402/fetch) pays /paid: 200, upstream body, PAYMENT-RESPONSE with a mined transfer', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const before = await snapshot(r, buyer);
    const payToBefore = await r.balance(r.payTo);
    const out = await runJson('client_v2.mjs', ['--url', r.url('/paid'), '--key', buyer.key, '--rpc', r.rpc, '--asset', r.token]);
    assert.equal(out.error, undefined, `client error: ${out.error}\n${r.gatewayLog()}`);
    assert.equal(out.status, 200, out.body);
    const body = JSON.parse(out.body);
    assert.equal(body.ok, true);
    assert.equal(body.path, '/paid');
    await assertPaidOnChain(r, out.paymentResponse, buyer);
    assert.equal(await r.hits(), before.hits + 1, 'exactly one upstream hit');
    assert.equal(await r.balance(buyer.address), before.balance - PRICE);
    assert.equal(await r.balance(r.payTo), payToBefore + PRICE);
  });

  test('official v1 client (x402-fetch 1.2.0) pays /paid: 200, X-PAYMENT-RESPONSE with a mined transfer', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    const before = await snapshot(r, buyer);
    const out = await runJson('client_v1.mjs', ['--url', r.url('/paid'), '--key', buyer.key]);
    assert.equal(out.error, undefined, `client error: ${out.error}\n${r.gatewayLog()}`);
    assert.equal(out.status, 200, out.body);
    assert.equal(JSON.parse(out.body).path, '/paid');
    assert.ok(out.headers['x-payment-response'], 'X-PAYMENT-RESPONSE header present');
    await assertPaidOnChain(r, out.paymentResponse, buyer, 'base-sepolia');
    assert.equal(await r.hits(), before.hits + 1);
    assert.equal(await r.balance(buyer.address), before.balance - PRICE);
  });

  test('upstream sees forwarding and payer headers, and never the payment itself', async () => {
    const r = rig();
    const buyer = r.buyers[2];
    const { v2 } = await challenge(r, '/paid');
    const res = await fetch(r.url('/paid'), { headers: { 'payment-signature': b64json(await paymentV2(buyer.key, v2)) } });
    assert.equal(res.status, 200, await res.clone().text());
    const { headers } = await res.json();
    assert.equal(headers['payment-signature'], undefined, 'PAYMENT-SIGNATURE stripped');
    assert.equal(headers['x-payment'], undefined, 'X-PAYMENT stripped');
    assert.match(headers['x-forwarded-for'] ?? '', /127\.0\.0\.1/);
    assert.equal(headers['x-forwarded-proto'], 'http');
    assert.equal(headers['x-forwarded-host'], r.authority);
    sameAddress(headers['x-payment-payer'], buyer.address);
    assert.equal(headers['x-payment-amount'], PRICE.toString());
  });

  test('Rust example buyer (examples/pay.rs) pays /paid', { skip: !process.env.PAY_EXAMPLE_BIN && 'PAY_EXAMPLE_BIN not set' }, async () => {
    const r = rig();
    const buyer = r.buyers[2];
    const before = await snapshot(r, buyer);
    const { stdout } = await promisify(execFile)(process.env.PAY_EXAMPLE_BIN, [r.url('/paid')], {
      env: { ...process.env, X402_PRIVATE_KEY: buyer.key },
      timeout: 60000,
    });
    // the output may show other 32-byte values (the nonce): the tx hash is the one mined
    const candidates = stdout.match(/0x[0-9a-fA-F]{64}/g) ?? [];
    const mined = (await Promise.all(candidates.map((h) => r.transfersIn(h).catch(() => null)))).filter(Boolean);
    assert.equal(mined.length, 1, `exactly one mined tx hash in the output: ${stdout}`);
    assert.equal(mined[0].receipt.status, 'success');
    assert.deepEqual(mined[0].transfers, [{ from: buyer.address, to: r.payTo, value: PRICE }]);
    assert.equal(await r.hits(), before.hits + 1);
  });
});
