// The gateway's claim job for `batch-settlement` channels, on the local chain: the charges kept
// off chain are claimed through the facilitator and swept to payTo on [batch] claim_interval, and
// a buyer who asks to withdraw gets back only what was not charged.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { decodePaymentResponseHeader } from '@x402/fetch';
import { createWalletClient, http } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { BATCH_SETTLEMENT_ADDRESS, compileBatchSettlement, officialBatchBuyer } from '../support/batch.mjs';
import { anvilChain } from '../support/chain.mjs';
import { useRig } from './rig.mjs';

const NETWORK = 'eip155:84532';
const PRICE = 1_000n;
const DEPOSIT = 10n * PRICE;

const ROUTES = `
[[routes]]
match = "GET /batched"
scheme = "batch-settlement"
amount = "${PRICE}"
[batch]
claim_interval = "1s"
`;

const rig = useRig({ batch: true, routes: ROUTES });
const ABI = compileBatchSettlement().abi;
const read = (r, functionName, args) => r.publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName, args });
const channelOf = async (r, id) => {
  const [balance, totalClaimed] = await read(r, 'channels', [id]);
  return { balance, totalClaimed };
};

// Waits (bounded) until `check` returns true; the claim job runs every second.
async function eventually(check, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('the claim job of batch-settlement channels', () => {
  let buyer;
  let paidFetch;
  let channelId;
  let config;
  let charged = 0n;
  const start = {};

  before(async () => {
    const r = rig();
    buyer = r.buyers[0];
    ({ paidFetch } = officialBatchBuyer(r, buyer));
    Object.assign(start, { buyer: await r.balance(buyer.address), payTo: await r.balance(r.payTo) });
  });

  async function pay(r, count) {
    for (let i = 0; i < count; i++) {
      const res = await paidFetch(r.url('/batched'));
      assert.equal(res.status, 200, `${await res.clone().text()}\n${r.gatewayLog()}`);
      await res.arrayBuffer();
      const receipt = decodePaymentResponseHeader(res.headers.get('payment-response'));
      charged = BigInt(receipt.extra.channelState.chargedCumulativeAmount);
    }
  }

  test('what was charged is claimed and swept to payTo without anyone asking', async () => {
    const r = rig();
    await pay(r, 4);
    const verified = await r.facLast('verify');
    config = verified.paymentPayload.payload.channelConfig;
    channelId = verified.paymentPayload.payload.voucher.channelId;
    assert.equal(charged, 4n * PRICE);
    await eventually(async () => (await channelOf(r, channelId)).totalClaimed === charged, 'the claim');
    await eventually(async () => (await r.balance(r.payTo)) === start.payTo + charged, 'the sweep to payTo');
    const [totalClaimed, totalSettled] = await read(r, 'receivers', [r.payTo, r.token]);
    assert.deepEqual({ totalClaimed, totalSettled }, { totalClaimed: charged, totalSettled: charged });
    assert.deepEqual(await channelOf(r, channelId), { balance: DEPOSIT, totalClaimed: charged });
  });

  test("a buyer's withdrawal request is beaten by the claim: the buyer gets back only what was not charged", async () => {
    const r = rig();
    // Two more vouchers, then the buyer asks for everything the chain does not yet know was spent.
    await pay(r, 2);
    const onChain = await channelOf(r, channelId);
    const asked = onChain.balance - onChain.totalClaimed;
    const wallet = createWalletClient({ account: privateKeyToAccount(buyer.key), chain: anvilChain(r.rpc), transport: http(r.rpc) });
    const channel = { ...config, withdrawDelay: Number(config.withdrawDelay) };
    const initiated = await wallet.writeContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName: 'initiateWithdraw', args: [channel, asked] });
    assert.equal((await r.publicClient.waitForTransactionReceipt({ hash: initiated })).status, 'success');
    // The gateway claims the two vouchers long before the withdraw delay has passed.
    await eventually(async () => (await channelOf(r, channelId)).totalClaimed === charged, 'the claim of the last vouchers');
    await r.publicClient.request({ method: 'evm_increaseTime', params: [901] });
    await r.publicClient.request({ method: 'evm_mine', params: [] });
    const before = await r.balance(buyer.address);
    const finalized = await wallet.writeContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName: 'finalizeWithdraw', args: [channel] });
    assert.equal((await r.publicClient.waitForTransactionReceipt({ hash: finalized })).status, 'success');
    assert.equal(await r.balance(buyer.address), before + DEPOSIT - charged, 'the buyer got back exactly the uncharged rest');
    assert.ok(DEPOSIT - charged < asked, 'the buyer asked for more than that');
    await eventually(async () => (await r.balance(r.payTo)) === start.payTo + charged, 'every charge swept to payTo');
    assert.equal(await r.balance(buyer.address), start.buyer - charged, 'the buyer paid exactly what was charged');
  });
});
