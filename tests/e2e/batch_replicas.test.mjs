// Two gateway replicas sharing one Redis take vouchers on one `batch-settlement` channel: the
// official buyer alternates between them, and neither charges twice nor lets a second request
// through while the other holds the channel.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { before, describe, test } from 'node:test';
import { decodePaymentResponseHeader } from '@x402/fetch';
import { BATCH_SETTLEMENT_ADDRESS, officialBatchBuyer } from '../support/batch.mjs';
import { GATEWAY_BIN, decodeB64Json, useRig } from './rig.mjs';

const NETWORK = 'eip155:84532';
const PRICE = 1_000n;
const DEPOSIT = 10n * PRICE;
const REQUESTS = 6;

const ROUTES = `
[[routes]]
match = "GET /batched"
scheme = "batch-settlement"
amount = "${PRICE}"
[[routes]]
match = "GET /batched/slow"
scheme = "batch-settlement"
amount = "${PRICE}"
`;

const rig = useRig({ batch: true, replicas: 2, routes: ROUTES });
const delta = (after, before) => ({ verify: after.verify - before.verify, settle: after.settle - before.settle });

describe('batch-settlement across two replicas on one Redis', () => {
  let paidFetch;
  let buyer;
  const start = {};

  before(async () => {
    const r = rig();
    buyer = r.buyers[1];
    ({ paidFetch } = officialBatchBuyer(r, buyer));
    Object.assign(start, { buyer: await r.balance(buyer.address), escrow: await r.balance(BATCH_SETTLEMENT_ADDRESS), hits: await r.hits(), calls: await r.facCalls() });
  });

  test(`${REQUESTS} requests alternating between replicas: one deposit, each voucher charged once, in order`, async () => {
    const r = rig();
    const cumulative = [];
    for (let i = 0; i < REQUESTS; i++) {
      const res = await paidFetch(r.url('/batched', i % 2));
      assert.equal(res.status, 200, `replica ${i % 2}: ${await res.clone().text()}\n${r.gatewayLog()}`);
      await res.arrayBuffer();
      cumulative.push(decodePaymentResponseHeader(res.headers.get('payment-response')).extra.channelState.chargedCumulativeAmount);
    }
    assert.deepEqual(cumulative, Array.from({ length: REQUESTS }, (_, i) => (BigInt(i + 1) * PRICE).toString()));
    assert.deepEqual(delta(await r.facCalls(), start.calls), { verify: 1, settle: 1 }, 'the deposit only: replica 1 judged vouchers from the shared record');
    assert.equal((await r.hits()) - start.hits, REQUESTS);
    assert.equal(await r.balance(buyer.address), start.buyer - DEPOSIT);
    assert.equal(await r.balance(BATCH_SETTLEMENT_ADDRESS), start.escrow + DEPOSIT);
  });

  test('while replica 0 holds the channel, replica 1 refuses the next voucher as busy', async () => {
    const r = rig();
    const hitsBefore = await r.hits();
    const slow = paidFetch(r.url('/batched/slow', 0));
    const deadline = Date.now() + 10000;
    while ((await r.hits()) === hitsBefore) {
      assert.ok(Date.now() < deadline, 'the first request never reached the upstream');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const busy = await paidFetch(r.url('/batched', 1));
    assert.equal(busy.status, 402);
    await busy.arrayBuffer();
    assert.equal(decodeB64Json(busy.headers.get('payment-required')).error, 'invalid_batch_settlement_evm_channel_busy');
    const first = await slow;
    assert.equal(first.status, 200);
    await first.arrayBuffer();
    assert.equal(decodePaymentResponseHeader(first.headers.get('payment-response')).extra.channelState.chargedCumulativeAmount, ((BigInt(REQUESTS) + 1n) * PRICE).toString());
    assert.equal((await r.hits()) - hitsBefore, 1);
  });

  test('`channels` lists the shared channel with what was charged and what is at stake', () => {
    const r = rig();
    const listed = spawnSync(GATEWAY_BIN, ['channels', '--config', r.gatewayConfigFile, '--format', 'json'], { encoding: 'utf8' });
    assert.equal(listed.status, 0, listed.stderr);
    const rows = JSON.parse(listed.stdout);
    assert.equal(rows.length, 1, listed.stdout);
    const charged = ((BigInt(REQUESTS) + 1n) * PRICE).toString();
    assert.equal(rows[0].payer.toLowerCase(), buyer.address.toLowerCase());
    assert.deepEqual(
      { charged: rows[0].charged, claimed: rows[0].claimed, unclaimed: rows[0].unclaimed, balance: rows[0].balance, busy: rows[0].busy },
      { charged, claimed: '0', unclaimed: charged, balance: DEPOSIT.toString(), busy: false },
    );
    const csv = spawnSync(GATEWAY_BIN, ['channels', '--config', r.gatewayConfigFile], { encoding: 'utf8' });
    assert.equal(csv.status, 0, csv.stderr);
    assert.match(csv.stdout, new RegExp(`^channel,network,payer,.*\n${rows[0].channel},eip155:84532,`));
  });
});
