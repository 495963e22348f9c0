// Payments that must not be charged: upstream failures, tampered authorizations and buyers the
// facilitator refuses. Each is checked over HTTP, at the upstream and on chain.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { b64json, paymentV2 } from '../support/sign.mjs';
import { assertNothingCharged, challenge, snapshot, useRig } from './rig.mjs';

const rig = useRig();
const OTHER = '0x000000000000000000000000000000000000dEaD';
const now = () => Math.floor(Date.now() / 1000);

const pay = (r, path, payload) => fetch(r.url(path), { headers: { 'payment-signature': b64json(payload) } });

describe('refused and uncharged payments', { timeout: 120000 }, () => {
  test('upstream 500 on a paid route: status passed through, nothing settled', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const { v2 } = await challenge(r, '/paid/status/500');
    const before = await snapshot(r, buyer);
    const res = await pay(r, '/paid/status/500', await paymentV2(buyer.key, v2));
    assert.equal(res.status, 500, await res.clone().text());
    assert.deepEqual(await res.json(), { error: 'upstream failure' });
    assert.equal(res.headers.get('payment-response'), null);
    await assertNothingCharged(r, before, buyer, { upstreamHits: 1 });
    assert.equal((await r.facCalls()).settle, before.calls.settle, 'no settle call');
  });

  const tampered = [
    ['amount lowered to 5000 (accepted and authorization)', { accepted: { amount: '5000' }, auth: { value: '5000' } }],
    ['authorization value lowered, accepted untouched', { auth: { value: '5000' } }],
    ['payTo changed to another address', { accepted: { payTo: OTHER }, auth: { to: OTHER } }],
    ['validBefore in the past', { auth: { validBefore: String(now() - 30) } }],
  ];
  for (const [name, change] of tampered) {
    test(`tampered payment refused before the upstream: ${name}`, async () => {
      const r = rig();
      const buyer = r.buyers[1];
      const { v2 } = await challenge(r, '/paid');
      const before = await snapshot(r, buyer);
      const res = await pay(r, '/paid', await paymentV2(buyer.key, v2, change));
      const text = await res.text();
      assert.ok([400, 402].includes(res.status), `402/400 expected, got ${res.status}: ${text}`);
      assert.equal(res.headers.get('payment-response'), null);
      await assertNothingCharged(r, before, buyer);
      const calls = await r.facCalls();
      assert.equal(calls.settle, before.calls.settle, 'no settle call');
      // if the facilitator was asked at all, it must have been asked about the configured price
      if (calls.verify > before.calls.verify) {
        const sent = await r.facLast('verify');
        assert.equal(sent.paymentRequirements.amount, '10000');
        assert.equal(sent.paymentRequirements.payTo.toLowerCase(), r.payTo.toLowerCase());
      }
    });
  }

  test('broke buyer: 402 carrying the facilitator reason, no upstream hit', async () => {
    const r = rig();
    const buyer = r.brokeBuyer;
    const { v2 } = await challenge(r, '/paid');
    const before = await snapshot(r, buyer);
    const res = await pay(r, '/paid', await paymentV2(buyer.key, v2));
    const text = await res.text();
    assert.equal(res.status, 402, text);
    const body = JSON.parse(text);
    assert.equal((await r.facCalls()).verify, before.calls.verify + 1, 'facilitator asked to verify');
    // ask the facilitator the same question to learn the reason it gave the gateway
    const verdict = await r.facPost('verify', await r.facLast('verify'));
    assert.equal(verdict.isValid, false);
    assert.ok(
      `${body.error} ${body.message}`.includes(verdict.invalidReason),
      `reason ${verdict.invalidReason} in error/message: ${text}`,
    );
    await assertNothingCharged(r, before, buyer);
  });
});
