// A signed authorization buys one request: replays, sequential or concurrent, must be refused
// before the upstream and must never move tokens twice.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { payV1 } from '../support/client_v1.mjs';
import { payV2 } from '../support/client_v2.mjs';
import { b64json, paymentV2 } from '../support/sign.mjs';
import { assertPaidOnChain, challenge, decodeB64Json, snapshot, useRig } from './rig.mjs';

const rig = useRig();
const REFUSED = [402, 409];

async function assertRefusedReplay(res) {
  const text = await res.text();
  assert.ok(REFUSED.includes(res.status), `replay refused with 402/409, got ${res.status}: ${text}`);
  assert.equal(res.headers.get('payment-response'), null);
  assert.equal(res.headers.get('x-payment-response'), null);
  const body = JSON.parse(text);
  assert.equal(typeof body.error, 'string', text);
  assert.equal(typeof body.message, 'string', text);
}

describe('replay protection', { timeout: 120000 }, () => {
  test('a v2 PAYMENT-SIGNATURE captured from the official client cannot be used again', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const before = await snapshot(r, buyer);
    const paid = await payV2({ url: r.url('/paid'), key: buyer.key, rpc: r.rpc, asset: r.token });
    assert.equal(paid.status, 200, paid.body);
    await assertPaidOnChain(r, paid.paymentResponse, buyer);
    assert.equal(paid.sent.length, 1);

    const replay = await fetch(r.url('/paid'), { headers: { 'payment-signature': paid.sent[0] } });
    await assertRefusedReplay(replay);
    assert.equal(await r.hits(), before.hits + 1, 'replay never reached the upstream');
    assert.equal((await r.transfersFrom(buyer.address, before.block + 1n)).length, 1, 'one transfer only');
  });

  test('a v1 X-PAYMENT captured from the official client cannot be used again', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    const before = await snapshot(r, buyer);
    const paid = await payV1({ url: r.url('/paid'), key: buyer.key });
    assert.equal(paid.status, 200, paid.body);
    await assertPaidOnChain(r, paid.paymentResponse, buyer, 'base-sepolia');

    const replay = await fetch(r.url('/paid'), { headers: { 'x-payment': paid.sent[0] } });
    await assertRefusedReplay(replay);
    assert.equal(await r.hits(), before.hits + 1);
    assert.equal((await r.transfersFrom(buyer.address, before.block + 1n)).length, 1);
  });

  test('20 concurrent requests with one fresh payment: exactly one succeeds', async () => {
    const r = rig();
    const buyer = r.buyers[2];
    const { v2 } = await challenge(r, '/paid');
    const header = b64json(await paymentV2(buyer.key, v2));
    const before = await snapshot(r, buyer);

    const responses = await Promise.all(
      Array.from({ length: 20 }, () => fetch(r.url('/paid'), { headers: { 'payment-signature': header } })),
    );
    const ok = responses.filter((res) => res.status === 200);
    const statuses = responses.map((res) => res.status);
    assert.equal(ok.length, 1, `exactly one 200, got ${statuses}`);
    for (const res of responses.filter((x) => x !== ok[0])) await assertRefusedReplay(res);
    await ok[0].text();

    await assertPaidOnChain(r, decodeB64Json(ok[0].headers.get('payment-response')), buyer);
    assert.equal(await r.hits(), before.hits + 1, 'one upstream hit');
    assert.equal((await r.transfersFrom(buyer.address, before.block + 1n)).length, 1, 'one transfer');
  });
});
