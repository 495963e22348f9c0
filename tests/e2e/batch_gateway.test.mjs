// `batch-settlement` routes of the gateway, paid by the official buyer (@x402/fetch with the
// batch-settlement client scheme) on the local chain, with the official facilitator as the
// receiver authorizer the gateway delegates to. What moved is asserted: transactions, escrow and
// buyer balances, facilitator calls and upstream hits.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { decodePaymentResponseHeader } from '@x402/fetch';
import { getAddress } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { BATCH_SETTLEMENT_ADDRESS, compileBatchSettlement, officialBatchBuyer } from '../support/batch.mjs';
import { challenge, decodeB64Json, useRig } from './rig.mjs';

const NETWORK = 'eip155:84532';
const PRICE = 1_000n;
const DEPOSIT = 10n * PRICE;
const REQUESTS = 5;

const ROUTES = `
[[routes]]
match = "GET /batched"
scheme = "batch-settlement"
amount = "${PRICE}"
description = "data paid from a channel"
[[routes]]
match = "GET /batched/slow"
scheme = "batch-settlement"
amount = "${PRICE}"
[[routes]]
match = "GET /batched/status/500"
scheme = "batch-settlement"
amount = "${PRICE}"
`;

const rig = useRig({ batch: true, routes: ROUTES });
const ABI = compileBatchSettlement().abi;

const channelOf = async (r, id) => {
  const [balance, totalClaimed] = await r.publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName: 'channels', args: [id] });
  return { balance, totalClaimed };
};


const delta = (after, before) => ({ verify: after.verify - before.verify, settle: after.settle - before.settle });

describe('batch-settlement through the gateway', () => {
  let buyer;
  let paidFetch;
  let clientScheme;
  let channelId;
  // The channel's cumulative charge as the last receipt told it.
  let charged = 0n;
  const start = {};

  before(async () => {
    const r = rig();
    buyer = r.buyers[0];
    ({ paidFetch, scheme: clientScheme } = officialBatchBuyer(r, buyer));
    Object.assign(start, { buyer: await r.balance(buyer.address), escrow: await r.balance(BATCH_SETTLEMENT_ADDRESS), hits: await r.hits(), payTo: await r.balance(r.payTo) });
  });

  test("the 402 names the facilitator's receiver authorizer, the delay and the deposit asked for", async () => {
    const r = rig();
    const { status, v2 } = await challenge(r, '/batched');
    assert.equal(status, 402);
    const accept = v2.accepts.find((a) => a.scheme === 'batch-settlement');
    assert.ok(accept, JSON.stringify(v2.accepts));
    assert.equal(accept.amount, PRICE.toString());
    assert.deepEqual(accept.extra, {
      name: 'USDC',
      version: '2',
      receiverAuthorizer: privateKeyToAccount(r.batch.authorizerKey).address,
      withdrawDelay: 900,
      minDeposit: DEPOSIT.toString(),
    });
  });

  test(`${REQUESTS} paid requests: one deposit transaction, then vouchers with no facilitator call and no chain access`, async () => {
    const r = rig();
    const callsBefore = await r.facCalls();
    const first = await paidFetch(r.url('/batched'));
    assert.equal(first.status, 200, `${await first.clone().text()}\n${r.gatewayLog()}`);
    await first.arrayBuffer();
    const deposit = decodePaymentResponseHeader(first.headers.get('payment-response'));
    assert.equal(deposit.success, true, JSON.stringify(deposit));
    assert.match(deposit.transaction, /^0x[0-9a-f]{64}$/);
    assert.equal(deposit.extra.chargedAmount, PRICE.toString());
    assert.equal(deposit.extra.channelState.chargedCumulativeAmount, PRICE.toString());
    const rc = await r.publicClient.waitForTransactionReceipt({ hash: deposit.transaction, timeout: 20000 });
    assert.equal(rc.status, 'success');
    assert.equal(getAddress(rc.to), getAddress(BATCH_SETTLEMENT_ADDRESS));
    const afterDeposit = await r.facCalls();
    assert.deepEqual(delta(afterDeposit, callsBefore), { verify: 1, settle: 1 });
    const verified = await r.facLast('verify');
    assert.equal(verified.paymentPayload.payload.type, 'deposit');
    channelId = verified.paymentPayload.payload.voucher.channelId;
    assert.deepEqual(await channelOf(r, channelId), { balance: DEPOSIT, totalClaimed: 0n });
    assert.equal(await r.balance(buyer.address), start.buyer - DEPOSIT);

    const block = await r.blockNumber();
    let cumulative = PRICE;
    for (let i = 1; i < REQUESTS; i++) {
      const res = await paidFetch(r.url('/batched'));
      assert.equal(res.status, 200, `${await res.clone().text()}\n${r.gatewayLog()}`);
      await res.arrayBuffer();
      const receipt = decodePaymentResponseHeader(res.headers.get('payment-response'));
      cumulative += PRICE;
      assert.equal(receipt.success, true);
      assert.equal(receipt.transaction, '', 'a voucher moves nothing on chain');
      assert.equal(receipt.payer, buyer.address.toLowerCase());
      assert.equal(receipt.extra.chargedAmount, PRICE.toString());
      assert.equal(receipt.extra.channelState.chargedCumulativeAmount, cumulative.toString());
    }
    assert.deepEqual(await r.facCalls(), afterDeposit, 'vouchers are checked by the gateway alone');
    assert.equal(await r.blockNumber(), block, 'no transaction for vouchers');
    assert.equal((await r.hits()) - start.hits, REQUESTS, 'each paid request reached the upstream once');
    assert.equal(await r.balance(buyer.address), start.buyer - DEPOSIT, 'only the deposit left the buyer');
  });

  test('an upstream failure charges nothing: the next voucher signs the same cumulative', async () => {
    const r = rig();
    const failed = await paidFetch(r.url('/batched/status/500'));
    assert.equal(failed.status, 500);
    assert.equal(failed.headers.get('payment-response'), null, 'no receipt for a failure');
    await failed.arrayBuffer();
    // The buyer's store did not move; neither did the gateway's record, so the next request's
    // voucher (charged + price) is accepted as is.
    const calls = await r.facCalls();
    const res = await paidFetch(r.url('/batched'));
    assert.equal(res.status, 200, `${await res.clone().text()}\n${r.gatewayLog()}`);
    await res.arrayBuffer();
    const receipt = decodePaymentResponseHeader(res.headers.get('payment-response'));
    assert.equal(receipt.extra.channelState.chargedCumulativeAmount, ((BigInt(REQUESTS) + 1n) * PRICE).toString());
    assert.deepEqual(await r.facCalls(), calls);
  });

  test('a voucher sent again after it was charged gets the corrective 402 with the proof, never the upstream', async () => {
    const r = rig();
    const sent = [];
    // The official buyer again, its requests' payment headers recorded on the way out.
    const recording = (input, init) => {
      const headers = new Headers(input instanceof Request ? input.headers : init?.headers);
      if (headers.get('payment-signature')) sent.push(headers.get('payment-signature'));
      return fetch(input, init);
    };
    const { paidFetch: recorded } = officialBatchBuyer(r, buyer, recording);
    const res = await recorded(r.url('/batched'));
    // A store that knew nothing of the channel: the client read the chain, was resynced by the
    // gateway's corrective 402 and paid on its retry.
    assert.equal(res.status, 200, `${await res.clone().text()}\n${r.gatewayLog()}`);
    await res.arrayBuffer();
    const charged = decodePaymentResponseHeader(res.headers.get('payment-response')).extra.channelState.chargedCumulativeAmount;
    assert.equal(sent.length, 2, 'one payment out of step, one retry after the corrective 402');

    const hitsBefore = await r.hits();
    const again = await fetch(r.url('/batched'), { headers: { 'PAYMENT-SIGNATURE': sent.at(-1) } });
    assert.equal(again.status, 402);
    await again.arrayBuffer();
    const required = decodeB64Json(again.headers.get('payment-required'));
    assert.equal(required.error, 'invalid_batch_settlement_evm_cumulative_amount_mismatch');
    const accept = required.accepts.find((a) => a.scheme === 'batch-settlement');
    assert.equal(accept.extra.channelState.channelId, channelId);
    assert.equal(accept.extra.channelState.chargedCumulativeAmount, charged);
    assert.equal(accept.extra.voucherState.signedMaxClaimable, charged);
    assert.match(accept.extra.voucherState.signature, /^0x[0-9a-f]{130}$/);
    assert.equal(await r.hits(), hitsBefore, 'a refused voucher never reaches the upstream');
  });

  test('a second request on a channel while the first is at the upstream is told the channel is busy', async () => {
    const r = rig();
    const hitsBefore = await r.hits();
    const slow = paidFetch(r.url('/batched/slow'));
    // Wait (bounded) until the first request is at the upstream: its hold on the channel is live.
    const deadline = Date.now() + 10000;
    while ((await r.hits()) === hitsBefore) {
      assert.ok(Date.now() < deadline, 'the first request never reached the upstream');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const busy = await paidFetch(r.url('/batched'));
    assert.equal(busy.status, 402);
    await busy.arrayBuffer();
    assert.equal(decodeB64Json(busy.headers.get('payment-required')).error, 'invalid_batch_settlement_evm_channel_busy');
    const first = await slow;
    assert.equal(first.status, 200);
    await first.arrayBuffer();
    assert.equal((await r.hits()) - hitsBefore, 1, 'the busy request never reached the upstream');
    // The channel is free again and the buyer's next voucher is accepted.
    const next = await paidFetch(r.url('/batched'));
    assert.equal(next.status, 200, `${await next.clone().text()}\n${r.gatewayLog()}`);
    await next.arrayBuffer();
    charged = BigInt(decodePaymentResponseHeader(next.headers.get('payment-response')).extra.channelState.chargedCumulativeAmount);
  });

  test("the upstream's Settlement-Overrides charges less than the price, and the buyer follows", async () => {
    const r = rig();
    const overrides = encodeURIComponent('Settlement-Overrides:{"amount":"400"}');
    const res = await paidFetch(r.url(`/batched?h=${overrides}`));
    assert.equal(res.status, 200, `${await res.clone().text()}\n${r.gatewayLog()}`);
    await res.arrayBuffer();
    assert.equal(res.headers.get('settlement-overrides'), null, "the seller's instruction never reaches the buyer");
    const receipt = decodePaymentResponseHeader(res.headers.get('payment-response'));
    assert.equal(receipt.extra.chargedAmount, '400');
    assert.equal(receipt.extra.channelState.chargedCumulativeAmount, (charged + 400n).toString());
    // The official client adopted the smaller charge: its next payment (a top-up deposit here, as
    // the channel's first deposit is spent) signs exactly that plus the price.
    const next = await paidFetch(r.url('/batched'));
    assert.equal(next.status, 200, `${await next.clone().text()}\n${r.gatewayLog()}`);
    await next.arrayBuffer();
    charged = BigInt(decodePaymentResponseHeader(next.headers.get('payment-response')).extra.channelState.chargedCumulativeAmount);
    assert.equal(charged, BigInt(receipt.extra.channelState.chargedCumulativeAmount) + PRICE);
  });

  test("a gateway that lost its channel state (restarted, memory store) takes the buyer's next voucher after asking the facilitator", async () => {
    const r = rig();
    await r.restartGateway();
    const calls = await r.facCalls();
    const res = await paidFetch(r.url('/batched'));
    assert.equal(res.status, 200, `${await res.clone().text()}\n${r.gatewayLog()}`);
    await res.arrayBuffer();
    const receipt = decodePaymentResponseHeader(res.headers.get('payment-response'));
    // The voucher covers everything the buyer owes: nothing charged before the restart is lost.
    assert.equal(BigInt(receipt.extra.channelState.chargedCumulativeAmount), charged + PRICE);
    charged += PRICE;
    assert.deepEqual(delta(await r.facCalls(), calls), { verify: 1, settle: 0 }, "the channel's state was read from the chain once");
  });

  test("the official client's refund returns the uncharged rest without calling the upstream, and what was charged reaches payTo", async () => {
    const r = rig();
    const deposited = (await channelOf(r, channelId)).balance;
    assert.ok(charged > 0n && charged < deposited, `${charged} charged of ${deposited}`);
    const hitsBefore = await r.hits();
    const buyerBefore = await r.balance(buyer.address);
    const settled = await clientScheme.refund(r.url('/batched'));
    assert.equal(settled.success, true, JSON.stringify(settled));
    assert.equal(settled.amount, (deposited - charged).toString());
    assert.equal(await r.hits(), hitsBefore, 'neither the unpaid probe nor the refund reached the upstream');
    assert.equal(await r.balance(buyer.address), buyerBefore + deposited - charged);
    // The refund claimed the charges in the same transaction: they are the seller's, swept to payTo.
    assert.deepEqual(await channelOf(r, channelId), { balance: charged, totalClaimed: charged });
    const deadline = Date.now() + 20000;
    while ((await r.balance(r.payTo)) !== start.payTo + charged) {
      assert.ok(Date.now() < deadline, 'the claimed charges never reached payTo');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(await r.balance(buyer.address), start.buyer - charged, 'the buyer paid exactly what was charged');
    // The channel is spent: a new voucher on it is refused and reaches nothing.
    const after = await fetch(r.url('/batched'));
    assert.equal(after.status, 402);
    await after.arrayBuffer();
  });
});
