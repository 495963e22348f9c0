// When the money moves relative to the upstream call: settle = "before" routes are paid before
// the upstream sees the request, default routes only after it answered successfully.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runJson } from '../support/proc.mjs';
import { PRICE, assertPaidOnChain, snapshot, useRig } from './rig.mjs';

const rig = useRig();

async function payWithOfficialClient(r, path, buyer) {
  const out = await runJson('client_v2.mjs', ['--url', r.url(path), '--key', buyer.key, '--rpc', r.rpc, '--asset', r.token]);
  assert.equal(out.error, undefined, `client error: ${out.error}\n${r.gatewayLog()}`);
  assert.equal(out.status, 200, out.body);
  return out;
}

describe('settlement order', { timeout: 120000 }, () => {
  test('settle = "before": transfer settled before the upstream receives the request', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const before = await snapshot(r, buyer);
    const out = await payWithOfficialClient(r, '/before', buyer);
    assert.equal(JSON.parse(out.body).path, '/before');
    await assertPaidOnChain(r, out.paymentResponse, buyer);

    assert.equal((await r.facCalls()).settle, before.calls.settle + 1, 'one settle call');
    assert.equal(await r.hits(), before.hits + 1, 'one upstream hit');
    const [times, upstream] = await Promise.all([r.facTimes(), r.lastUpstream()]);
    assert.ok(
      times.settle.answeredAt <= upstream.receivedAt,
      `settle ${JSON.stringify(times.settle)}, upstream hit at ${upstream.receivedAt}\n${r.gatewayLog()}`,
    );
    assert.equal(await r.balance(buyer.address), before.balance - PRICE);
  });

  test('default route: settle only after the upstream request', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    const before = await snapshot(r, buyer);
    const out = await payWithOfficialClient(r, '/paid', buyer);
    await assertPaidOnChain(r, out.paymentResponse, buyer);
    assert.equal((await r.facCalls()).settle, before.calls.settle + 1);
    const [times, upstream] = await Promise.all([r.facTimes(), r.lastUpstream()]);
    assert.ok(
      times.settle.receivedAt >= upstream.receivedAt,
      `settle asked at ${times.settle.receivedAt}, upstream hit at ${upstream.receivedAt}`,
    );
  });
});
