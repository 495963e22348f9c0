// `batch-settlement` with the gateway's own receiver-authorizer key ([batch]
// receiver_authorizer_key): channels name the gateway's address, and the gateway signs its claims
// and refunds itself; the facilitator only submits them. Nothing is delegated to it.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { decodePaymentResponseHeader } from '@x402/fetch';
import { privateKeyToAccount } from 'viem/accounts';
import { BATCH_SETTLEMENT_ADDRESS, compileBatchSettlement, officialBatchBuyer } from '../support/batch.mjs';
import { challenge, useRig } from './rig.mjs';

const NETWORK = 'eip155:84532';
const PRICE = 1_000n;
const DEPOSIT = 10n * PRICE;
// Anvil's ninth account: a key no other part of the rig uses.
const GATEWAY_AUTHORIZER_KEY = '0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97';
const GATEWAY_AUTHORIZER = privateKeyToAccount(GATEWAY_AUTHORIZER_KEY).address;

const ROUTES = `
[[routes]]
match = "GET /batched"
scheme = "batch-settlement"
amount = "${PRICE}"
[batch]
claim_interval = "1s"
receiver_authorizer_key = "${GATEWAY_AUTHORIZER_KEY}"
`;

const rig = useRig({ batch: true, routes: ROUTES });
const ABI = compileBatchSettlement().abi;
const channelOf = async (r, id) => {
  const [balance, totalClaimed] = await r.publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName: 'channels', args: [id] });
  return { balance, totalClaimed };
};

async function eventually(check, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe("batch-settlement with the gateway's own receiver authorizer", () => {
  let buyer;
  let scheme;
  let paidFetch;
  const start = {};

  before(async () => {
    const r = rig();
    buyer = r.buyers[0];
    ({ scheme, paidFetch } = officialBatchBuyer(r, buyer));
    Object.assign(start, { buyer: await r.balance(buyer.address), payTo: await r.balance(r.payTo) });
  });

  test("the 402 names the gateway's own authorizer, not the facilitator's", async () => {
    const r = rig();
    const { v2 } = await challenge(r, '/batched');
    const accept = v2.accepts.find((a) => a.scheme === 'batch-settlement');
    assert.equal(accept.extra.receiverAuthorizer, GATEWAY_AUTHORIZER);
    assert.notEqual(accept.extra.receiverAuthorizer, privateKeyToAccount(r.batch.authorizerKey).address);
  });

  test('claims signed by the gateway land and pay out; its signed refund returns the rest', async () => {
    const r = rig();
    let charged = 0n;
    for (let i = 0; i < 3; i++) {
      const res = await paidFetch(r.url('/batched'));
      assert.equal(res.status, 200, `${await res.clone().text()}\n${r.gatewayLog()}`);
      await res.arrayBuffer();
      charged = BigInt(decodePaymentResponseHeader(res.headers.get('payment-response')).extra.channelState.chargedCumulativeAmount);
    }
    const verified = await r.facLast('verify');
    const config = verified.paymentPayload.payload.channelConfig;
    assert.equal(config.receiverAuthorizer, GATEWAY_AUTHORIZER, 'the channel names the gateway');
    const channelId = verified.paymentPayload.payload.voucher.channelId;
    await eventually(async () => (await channelOf(r, channelId)).totalClaimed === charged, `the claim\n${r.gatewayLog()}`);
    await eventually(async () => (await r.balance(r.payTo)) === start.payTo + charged, 'the sweep');
    const claim = await r.facLast('settle');
    assert.match(JSON.stringify(claim.paymentPayload.payload), /"type":"(claim|settle)"/);

    const settled = await scheme.refund(r.url('/batched')).catch((e) => {
      throw new Error(`${e.message}\n${r.gatewayLog()}`);
    });
    assert.equal(settled.success, true, JSON.stringify(settled));
    assert.equal(settled.amount, (DEPOSIT - charged).toString());
    const refund = await r.facLast('settle');
    assert.equal(refund.paymentPayload.payload.type, 'refund');
    assert.match(refund.paymentPayload.payload.refundAuthorizerSignature, /^0x[0-9a-f]{130}$/, 'the gateway signed the refund');
    assert.equal(await r.balance(buyer.address), start.buyer - charged, 'the buyer paid exactly what was charged');
  });
});
