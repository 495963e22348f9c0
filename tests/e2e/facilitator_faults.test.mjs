// A broken or refusing facilitator must never turn into free access or a charge without service:
// whatever the status, the upstream is not called when verification fails, and nothing moves.
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { b64json, paymentV2 } from '../support/sign.mjs';
import { assertNothingCharged, challenge, snapshot, useRig } from './rig.mjs';

const rig = useRig();

async function payOnce(r, buyer) {
  const { v2 } = await challenge(r, '/paid');
  const res = await fetch(r.url('/paid'), { headers: { 'payment-signature': b64json(await paymentV2(buyer.key, v2)) } });
  return { status: res.status, text: await res.text(), paymentResponse: res.headers.get('payment-response') };
}

describe('facilitator faults', { timeout: 120000 }, () => {
  afterEach(() => rig().facPost('__reset', {}));

  // hang outlasts the configured 10 s facilitator timeout; otherpayer is a valid verdict about
  // another payer, which must not be taken for this payment's
  for (const mode of ['invalid', 'http500', 'garbage', 'wrongshape', 'hang', 'otherpayer']) {
    test(`verify answers "${mode}": refused, upstream untouched, nothing charged`, { timeout: 30000 }, async () => {
      const r = rig();
      const buyer = r.buyers[0];
      await r.facPost('__mode', { verify: mode });
      const before = await snapshot(r, buyer);
      const res = await payOnce(r, buyer);
      assert.ok(res.status >= 400, `refused, got ${res.status}: ${res.text}`);
      assert.equal(res.paymentResponse, null);
      const body = JSON.parse(res.text);
      assert.equal(typeof body.error, 'string', res.text);
      assert.equal((await r.facCalls()).settle, 0, 'no settle after a failed verify');
      await assertNothingCharged(r, before, buyer);
    });
  }

  test('settle refused after the upstream answered: no 2xx, nothing charged', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    await r.facPost('__mode', { settle: 'invalid' });
    const before = await snapshot(r, buyer);
    const res = await payOnce(r, buyer);
    assert.ok(res.status >= 400, `not served as paid, got ${res.status}: ${res.text}`);
    if (res.paymentResponse) assert.equal(JSON.parse(Buffer.from(res.paymentResponse, 'base64')).success, false);
    await assertNothingCharged(r, before, buyer, { upstreamHits: 1 });
  });
});
