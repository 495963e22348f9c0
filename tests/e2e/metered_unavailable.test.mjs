// A metered route whose facilitator names no `upto` settling address (its /supported has no upto
// kind): buyers could not sign an authorization anyone can settle, so the gateway fails closed.
// No challenge without the address, no payment taken, nothing reaches the upstream.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { useRig } from './rig.mjs';

const rig = useRig({
  routes: `
[[routes]]
match = "GET /metered"
scheme = "upto"
price = "$1"
`,
});

describe('a metered route without a known upto facilitator', () => {
  test('answers 503 facilitator_unavailable, with no challenge, and the upstream sees nothing', async () => {
    const r = rig();
    const supported = await fetch(`${r.facilitatorUrl}/supported`).then((res) => res.json());
    assert.equal(supported.kinds.some((k) => k.scheme === 'upto'), false, 'this facilitator settles no upto');
    const hits = await r.hits();
    const calls = await r.facCalls();
    const unpaid = await fetch(r.url('/metered'));
    assert.equal(unpaid.status, 503);
    assert.equal(unpaid.headers.get('payment-required'), null, 'no challenge without the address');
    assert.equal((await unpaid.json()).error, 'facilitator_unavailable');
    const paid = await fetch(r.url('/metered'), { headers: { 'PAYMENT-SIGNATURE': Buffer.from('{"x402Version":2}').toString('base64') } });
    assert.equal(paid.status, 503);
    assert.equal(await r.hits(), hits, 'the upstream saw nothing');
    assert.deepEqual(await r.facCalls(), calls, 'no verify or settle call');
    // the other routes are served as before
    assert.equal((await fetch(r.url('/paid'))).status, 402);
  });
});
