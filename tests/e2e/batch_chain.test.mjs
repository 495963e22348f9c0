// The `batch-settlement` scheme on the local chain, without the gateway: the project's own escrow
// and EIP-3009 deposit collector at the addresses @x402/evm hard-codes, driven by the official
// pieces only — the reference seller (@x402/express + the batch-settlement server scheme), the
// official client (@x402/fetch + the batch-settlement client scheme) and the official facilitator
// (with a receiver authorizer the seller delegates to). The gateway's batch-settlement routes will
// be tested against exactly these behaviours, so what moves on chain at each step is pinned here.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import express from 'express';
import { paymentMiddleware, x402ResourceServer } from '@x402/express';
import { HTTPFacilitatorClient } from '@x402/core/server';
import { x402Client } from '@x402/core/client';
import { decodePaymentResponseHeader, wrapFetchWithPayment } from '@x402/fetch';
import { claimBatchTypes, toClientEvmSigner } from '@x402/evm';
import { BatchSettlementEvmScheme as BatchClientScheme, computeChannelId, signVoucher } from '@x402/evm/batch-settlement/client';
import { BatchSettlementEvmScheme as BatchServerScheme } from '@x402/evm/batch-settlement/server';
import { BaseError, ContractFunctionRevertedError, createWalletClient, getAddress, hashTypedData, http, parseEventLogs } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { BATCH_SETTLEMENT_ADDRESS, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, MULTICALL3_ADDRESS, compileBatchSettlement, compileErc3009Collector } from '../support/batch.mjs';
import { anvilChain } from '../support/chain.mjs';
import { freePort } from '../support/util.mjs';
import { useRig } from './rig.mjs';

const rig = useRig({ batch: true, gateway: false });

const NETWORK = 'eip155:84532';
const PRICE = 1_000n;
const REQUESTS = 5;
// the reference server announces minDeposit = 10 × price, and the client deposits that much
const DEPOSIT = 10n * PRICE;
const WITHDRAW_DELAY = 900;
const domain = (chainId) => ({ name: 'x402 Batch Settlement', version: '1', chainId, verifyingContract: getAddress(BATCH_SETTLEMENT_ADDRESS) });

// @x402/evm 2.27.0 exports batchSettlementABI from no public entry point; this is the chunk its
// facilitator imports it from (the version is pinned, so the file name is stable).
const { batchSettlementABI: PUBLISHED_ABI } = await import(new URL('../node_modules/@x402/evm/dist/esm/chunk-H25OEB2U.mjs', import.meta.url));
const ABI = compileBatchSettlement().abi;

const read = (r, functionName, args) => r.publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName, args });
const channelOf = async (r, id) => {
  const [balance, totalClaimed] = await read(r, 'channels', [id]);
  return { balance, totalClaimed };
};
const receiverOf = async (r) => {
  const [totalClaimed, totalSettled] = await read(r, 'receivers', [r.payTo, r.token]);
  return { totalClaimed, totalSettled };
};

async function receipt(r, hash) {
  const rc = await r.publicClient.waitForTransactionReceipt({ hash, timeout: 20000 });
  assert.equal(rc.status, 'success', `transaction ${hash}`);
  return rc;
}

const eventsOf = (rc, eventName) =>
  parseEventLogs({ abi: ABI, logs: rc.logs.filter((l) => getAddress(l.address) === getAddress(BATCH_SETTLEMENT_ADDRESS)), eventName }).map((l) => l.args);

// The custom error a call to the escrow reverts with, simulated from `account`.
async function revertName(r, account, functionName, args) {
  try {
    await r.publicClient.simulateContract({ account, address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName, args });
  } catch (err) {
    const reverted = err instanceof BaseError ? err.walk((e) => e instanceof ContractFunctionRevertedError) : null;
    assert.ok(reverted, `expected a contract revert, got ${err.message}`);
    return reverted.data?.errorName;
  }
  assert.fail(`${functionName} did not revert`);
}

// key order made canonical and solc's `internalType` annotations dropped, so two ABIs compare by
// what the wire sees
function sortDeep(v) {
  if (Array.isArray(v)) return v.map(sortDeep);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v).filter((k) => k !== 'internalType').sort().map((k) => [k, sortDeep(v[k])]));
  }
  return v;
}

describe('batch-settlement contracts on the local chain', () => {
  test('escrow, collector and Multicall3 sit at the canonical addresses, the escrow in the x402 domain', async () => {
    const r = rig();
    assert.equal(r.batch.settlement, getAddress(BATCH_SETTLEMENT_ADDRESS));
    assert.equal(r.batch.erc3009Collector, getAddress(ERC3009_DEPOSIT_COLLECTOR_ADDRESS));
    assert.ok(await r.publicClient.getCode({ address: MULTICALL3_ADDRESS }), 'Multicall3 stand-in installed');
    const [, name, version, chainId, verifyingContract] = await read(r, 'eip712Domain');
    assert.deepEqual({ name, version, chainId: Number(chainId), verifyingContract }, domain(r.chainId));
    assert.equal(await read(r, 'MIN_WITHDRAW_DELAY'), 900);
    assert.equal(await read(r, 'MAX_WITHDRAW_DELAY'), 2_592_000);
  });

  test("the escrow's ABI holds every entry @x402/evm calls", () => {
    const ours = ABI.map((i) => JSON.stringify(sortDeep(i)));
    const missing = PUBLISHED_ABI.map((i) => JSON.stringify(sortDeep(i))).filter((i) => !ours.includes(i));
    assert.deepEqual(missing, []);
  });

  test('channel id and the voucher, refund and claim-batch digests match what the official code signs', async () => {
    const r = rig();
    const config = {
      payer: r.buyers[0].address,
      payerAuthorizer: r.buyers[0].address,
      receiver: r.payTo,
      receiverAuthorizer: privateKeyToAccount(r.batch.authorizerKey).address,
      token: r.token,
      withdrawDelay: WITHDRAW_DELAY,
      salt: `0x${'00'.repeat(31)}07`,
    };
    const id = computeChannelId(config, NETWORK);
    assert.equal(await read(r, 'getChannelId', [config]), id);
    const d = domain(r.chainId);
    assert.equal(await read(r, 'getVoucherDigest', [id, 1234n]), hashTypedData({ domain: d, types: { Voucher: [{ name: 'channelId', type: 'bytes32' }, { name: 'maxClaimableAmount', type: 'uint128' }] }, primaryType: 'Voucher', message: { channelId: id, maxClaimableAmount: 1234n } }));
    const refundTypes = { Refund: [{ name: 'channelId', type: 'bytes32' }, { name: 'nonce', type: 'uint256' }, { name: 'amount', type: 'uint128' }] };
    assert.equal(await read(r, 'getRefundDigest', [id, 3n, 55n]), hashTypedData({ domain: d, types: refundTypes, primaryType: 'Refund', message: { channelId: id, nonce: 3n, amount: 55n } }));
    const rows = [
      { voucher: { channel: config, maxClaimableAmount: 10n }, signature: '0x', totalClaimed: 7n },
      { voucher: { channel: { ...config, salt: `0x${'00'.repeat(31)}08` }, maxClaimableAmount: 20n }, signature: '0x', totalClaimed: 20n },
    ];
    const claims = rows.map((c) => ({ channelId: computeChannelId(c.voucher.channel, NETWORK), maxClaimableAmount: c.voucher.maxClaimableAmount, totalClaimed: c.totalClaimed }));
    assert.equal(await read(r, 'getClaimBatchDigest', [rows]), hashTypedData({ domain: d, types: claimBatchTypes, primaryType: 'ClaimBatch', message: { claims } }));
  });

  test("deposit's own refusals, and a collector only the escrow may call", async () => {
    const r = rig();
    const payer = privateKeyToAccount(r.buyers[0].key);
    const config = {
      payer: payer.address,
      payerAuthorizer: payer.address,
      receiver: r.payTo,
      receiverAuthorizer: privateKeyToAccount(r.batch.authorizerKey).address,
      token: r.token,
      withdrawDelay: WITHDRAW_DELAY,
      salt: `0x${'00'.repeat(32)}`,
    };
    const zero = '0x0000000000000000000000000000000000000000';
    const deposit = (c, amount = 1n, collector = ERC3009_DEPOSIT_COLLECTOR_ADDRESS) => revertName(r, payer, 'deposit', [c, amount, collector, '0x']);
    assert.equal(await deposit({ ...config, receiverAuthorizer: zero }), 'InvalidChannel');
    assert.equal(await deposit({ ...config, withdrawDelay: 899 }), 'WithdrawDelayOutOfRange');
    assert.equal(await deposit({ ...config, withdrawDelay: 2_592_001 }), 'WithdrawDelayOutOfRange');
    assert.equal(await deposit(config, 0n), 'ZeroDeposit');
    assert.equal(await deposit(config, 1n, zero), 'InvalidCollector');
    const collect = r.publicClient.simulateContract({
      account: payer,
      address: ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
      abi: compileErc3009Collector().abi,
      functionName: 'collect',
      args: [payer.address, r.token, 1n, `0x${'00'.repeat(32)}`, '0x'],
    });
    await assert.rejects(collect, (err) => err.walk((e) => e instanceof ContractFunctionRevertedError)?.data?.errorName === 'OnlyX402BatchSettlement');
  });
});

// The official buyer: the batch-settlement client scheme, with its in-memory channel store, behind
// @x402/fetch (which probes unpaid, pays the 402 and retries once after a corrective 402).
function officialBuyer(r, buyer) {
  const scheme = new BatchClientScheme(toClientEvmSigner(privateKeyToAccount(buyer.key), r.publicClient));
  const client = x402Client.fromConfig({
    schemes: [{ network: NETWORK, client: scheme }],
    // the default controls only trust x402's built-in tokens; ours is deployed locally
    spendControls: { allowedAssets: [{ network: NETWORK, asset: r.token }] },
  });
  return { scheme, paidFetch: wrapFetchWithPayment(fetch, client) };
}

// `count` paid requests; returns the decoded PAYMENT-RESPONSE of each.
async function payRequests(paidFetch, url, count) {
  const responses = [];
  for (let i = 0; i < count; i++) {
    const res = await paidFetch(url);
    assert.equal(res.status, 200, await res.clone().text());
    await res.arrayBuffer();
    responses.push(decodePaymentResponseHeader(res.headers.get('payment-response')));
  }
  return responses;
}

// The channel config the client sent with its last deposit, from the facilitator's request log.
async function lastDepositConfig(r) {
  const body = await r.facLast('verify');
  assert.equal(body.paymentPayload.payload.type, 'deposit');
  return body.paymentPayload.payload.channelConfig;
}

const contractConfig = (c) => ({ ...c, withdrawDelay: Number(c.withdrawDelay) });

describe('official client, reference server and facilitator on the escrow', () => {
  let seller;
  let url;
  let serverScheme;
  let facilitatorClient;
  let clientScheme;
  let paidFetch;
  let buyer;
  let channelConfig;
  let channelId;
  const start = {};
  const gas = {};

  before(async () => {
    const r = rig();
    buyer = r.buyers[0];
    facilitatorClient = new HTTPFacilitatorClient({ url: r.facilitatorUrl });
    // no receiverAuthorizerSigner: the seller delegates to the facilitator's advertised authorizer
    serverScheme = new BatchServerScheme(r.payTo, { withdrawDelay: WITHDRAW_DELAY });
    const resourceServer = new x402ResourceServer(facilitatorClient).register(NETWORK, serverScheme);
    const routes = {
      'GET /batched': {
        accepts: {
          scheme: 'batch-settlement',
          network: NETWORK,
          payTo: r.payTo,
          // an atomic amount: a locally deployed token has no default-asset entry for "$" prices
          price: { amount: PRICE.toString(), asset: r.token, extra: { name: 'USDC', version: '2' } },
          maxTimeoutSeconds: 120,
        },
        description: 'batched data',
        mimeType: 'application/json',
      },
    };
    const app = express();
    app.use(paymentMiddleware(routes, resourceServer));
    app.get('/batched', (_req, res) => res.json({ data: 'batched' }));
    const port = await freePort();
    seller = await new Promise((resolve, reject) => {
      const s = app.listen(port, '127.0.0.1', () => resolve(s));
      s.on('error', reject);
    });
    url = `http://127.0.0.1:${port}/batched`;

    ({ scheme: clientScheme, paidFetch } = officialBuyer(r, buyer));
    Object.assign(start, { buyer: await r.balance(buyer.address), payTo: await r.balance(r.payTo), escrow: await r.balance(BATCH_SETTLEMENT_ADDRESS), calls: await r.facCalls() });
  });

  after(() => new Promise((resolve) => (seller ? seller.close(resolve) : resolve())));


  test('/supported advertises the facilitator authorizer, and the 402 carries it', async () => {
    const r = rig();
    const supported = await fetch(`${r.facilitatorUrl}/supported`).then((res) => res.json());
    const kind = supported.kinds.find((k) => k.scheme === 'batch-settlement' && k.network === NETWORK);
    assert.ok(kind, JSON.stringify(supported.kinds));
    const authorizer = privateKeyToAccount(r.batch.authorizerKey).address;
    assert.equal(kind.extra.receiverAuthorizer, authorizer);
    const res = await fetch(url);
    assert.equal(res.status, 402);
    const required = JSON.parse(Buffer.from(res.headers.get('payment-required'), 'base64').toString('utf8'));
    const accept = required.accepts.find((a) => a.scheme === 'batch-settlement');
    assert.equal(accept.amount, PRICE.toString());
    assert.equal(getAddress(accept.asset), r.token);
    assert.deepEqual(accept.extra, { name: 'USDC', version: '2', receiverAuthorizer: authorizer, withdrawDelay: WITHDRAW_DELAY, minDeposit: DEPOSIT.toString() });
  });

  test(`${REQUESTS} paid requests: one deposit transaction, then vouchers with no facilitator settle and no chain access`, async () => {
    const r = rig();
    const callsBefore = await r.facCalls();
    const first = await paidFetch(url);
    assert.equal(first.status, 200, await first.clone().text());
    assert.deepEqual(await first.json(), { data: 'batched' });
    const depositResponse = decodePaymentResponseHeader(first.headers.get('payment-response'));
    assert.equal(depositResponse.success, true, JSON.stringify(depositResponse));
    assert.equal(depositResponse.amount, DEPOSIT.toString());
    assert.equal(depositResponse.extra.chargedAmount, PRICE.toString());
    const depositReceipt = await receipt(r, depositResponse.transaction);
    gas.deposit = depositReceipt.gasUsed;
    assert.equal(getAddress(depositReceipt.to), getAddress(BATCH_SETTLEMENT_ADDRESS));
    const [deposited] = eventsOf(depositReceipt, 'Deposited');
    assert.equal(eventsOf(depositReceipt, 'ChannelCreated').length, 1);
    channelId = deposited.channelId;
    assert.equal(deposited.amount, DEPOSIT);
    assert.equal(deposited.newBalance, DEPOSIT);

    const lastVerify = await r.facLast('verify');
    channelConfig = lastVerify.paymentPayload.payload.channelConfig;
    assert.equal(lastVerify.paymentPayload.payload.type, 'deposit');
    assert.equal(computeChannelId(channelConfig, NETWORK), channelId);
    assert.equal(getAddress(channelConfig.payer), buyer.address);
    assert.equal(getAddress(channelConfig.receiverAuthorizer), privateKeyToAccount(r.batch.authorizerKey).address);
    const afterDeposit = await r.facCalls();
    assert.deepEqual({ verify: afterDeposit.verify - callsBefore.verify, settle: afterDeposit.settle - callsBefore.settle }, { verify: 1, settle: 1 });
    assert.deepEqual(await channelOf(r, channelId), { balance: DEPOSIT, totalClaimed: 0n });
    assert.equal(await r.balance(buyer.address), start.buyer - DEPOSIT);
    assert.equal(await r.balance(BATCH_SETTLEMENT_ADDRESS), start.escrow + DEPOSIT);
    assert.equal(await r.balance(ERC3009_DEPOSIT_COLLECTOR_ADDRESS), 0n, 'the collector keeps nothing');

    const block = await r.blockNumber();
    let cumulative = PRICE;
    for (let i = 1; i < REQUESTS; i++) {
      const res = await paidFetch(url);
      assert.equal(res.status, 200, await res.clone().text());
      await res.arrayBuffer();
      const pr = decodePaymentResponseHeader(res.headers.get('payment-response'));
      cumulative += PRICE;
      assert.equal(pr.success, true);
      assert.equal(pr.transaction, '', 'a voucher has no transaction');
      assert.equal(pr.extra.chargedAmount, PRICE.toString());
      assert.equal(pr.extra.channelState.chargedCumulativeAmount, cumulative.toString());
    }
    const afterVouchers = await r.facCalls();
    assert.deepEqual(afterVouchers, afterDeposit, 'vouchers are checked by the seller alone: no /verify, no /settle');
    assert.equal(await r.blockNumber(), block, 'no transaction for vouchers');
    assert.deepEqual(await channelOf(r, channelId), { balance: DEPOSIT, totalClaimed: 0n });
    assert.equal(await r.balance(r.payTo), start.payTo, 'nothing paid out before the claim');
  });

  test('the channel manager claims and settles: payTo receives exactly N × price', async () => {
    const r = rig();
    const total = BigInt(REQUESTS) * PRICE;
    const callsBefore = await r.facCalls();
    const manager = serverScheme.createChannelManager(facilitatorClient, NETWORK, r.token);
    const result = await manager.claimAndSettle();
    assert.equal(result.claims.length, 1, JSON.stringify(result.claims));
    const claimReceipt = await receipt(r, result.claims[0].transaction);
    gas.claim = claimReceipt.gasUsed;
    assert.deepEqual(eventsOf(claimReceipt, 'Claimed').map((e) => ({ channelId: e.channelId, claimAmount: e.claimAmount, newTotalClaimed: e.newTotalClaimed })), [
      { channelId, claimAmount: total, newTotalClaimed: total },
    ]);
    const settleReceipt = await receipt(r, result.settle.transaction);
    gas.settle = settleReceipt.gasUsed;
    assert.deepEqual(eventsOf(settleReceipt, 'Settled').map((e) => ({ receiver: e.receiver, token: e.token, amount: e.amount })), [{ receiver: r.payTo, token: r.token, amount: total }]);

    assert.equal(await r.balance(r.payTo), start.payTo + total);
    assert.deepEqual(await channelOf(r, channelId), { balance: DEPOSIT, totalClaimed: total });
    assert.deepEqual(await receiverOf(r), { totalClaimed: total, totalSettled: total });
    assert.equal(await r.balance(BATCH_SETTLEMENT_ADDRESS), start.escrow + DEPOSIT - total);
    const calls = await r.facCalls();
    assert.deepEqual({ verify: calls.verify - callsBefore.verify, settle: calls.settle - callsBefore.settle }, { verify: 0, settle: 2 }, 'one claim, one settle');

    // nothing left: a second round sends nothing
    const again = await manager.claimAndSettle();
    assert.deepEqual(again, { claims: [], settle: undefined });
    assert.equal((await r.facCalls()).settle, calls.settle);
  });

  test('a cooperative refund returns the unspent deposit to the buyer', async () => {
    const r = rig();
    const total = BigInt(REQUESTS) * PRICE;
    const response = await clientScheme.refund(url);
    assert.equal(response.success, true, JSON.stringify(response));
    assert.equal(response.amount, (DEPOSIT - total).toString());
    const refundReceipt = await receipt(r, response.transaction);
    gas.refund = refundReceipt.gasUsed;
    assert.deepEqual(eventsOf(refundReceipt, 'Refunded').map((e) => ({ channelId: e.channelId, amount: e.amount })), [{ channelId, amount: DEPOSIT - total }]);
    assert.equal(await r.balance(buyer.address), start.buyer - total, 'the buyer paid exactly N × price');
    assert.deepEqual(await channelOf(r, channelId), { balance: total, totalClaimed: total });
    assert.equal(await read(r, 'refundNonce', [channelId]), 1n);
    assert.equal(await r.balance(BATCH_SETTLEMENT_ADDRESS), start.escrow);
  });

  test('the escrow itself refuses a claim above the voucher ceiling, above the balance, or from a stranger', async () => {
    const r = rig();
    const config = contractConfig(channelConfig);
    const account = privateKeyToAccount(buyer.key);
    const claimed = BigInt(REQUESTS) * PRICE;
    const row = async (ceiling, totalClaimed) => {
      const signature = await signVoucher(toClientEvmSigner(account, r.publicClient), channelId, ceiling.toString(), NETWORK);
      return { voucher: { channel: config, maxClaimableAmount: ceiling }, signature: signature.signature, totalClaimed };
    };
    const receiver = { address: r.payTo };
    assert.equal(await revertName(r, receiver, 'claim', [[await row(claimed + 100n, claimed + 200n)]]), 'ClaimExceedsCeiling');
    assert.equal(await revertName(r, receiver, 'claim', [[await row(claimed + 10_000n, claimed + 200n)]]), 'ClaimExceedsBalance');
    assert.equal(await revertName(r, { address: r.buyers[2].address }, 'claim', [[await row(claimed, claimed)]]), 'NotAuthorizedToClaim');
    assert.equal(await revertName(r, receiver, 'claim', [[]]), 'EmptyBatch');
    // a batch signed by someone other than the receiver authorizer
    const stranger = privateKeyToAccount(r.buyers[2].key);
    const rows = [await row(claimed + 100n, claimed + 100n)];
    const digest = await read(r, 'getClaimBatchDigest', [rows]);
    const badAuthorization = await stranger.sign({ hash: digest });
    assert.equal(await revertName(r, stranger, 'claimWithSignature', [rows, badAuthorization]), 'InvalidSignature');
    // a row at or below the recorded total changes nothing, whatever its signature: replays are harmless
    const stale = { voucher: { channel: config, maxClaimableAmount: claimed }, signature: '0x', totalClaimed: claimed };
    const { result } = await r.publicClient.simulateContract({ account: receiver, address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName: 'claim', args: [[stale]] });
    assert.equal(result, undefined);
  });

  test("the facilitator's refusals of vouchers the escrow would not honour", async () => {
    const r = rig();
    const res = await fetch(url);
    const requirements = JSON.parse(Buffer.from(res.headers.get('payment-required'), 'base64').toString('utf8')).accepts[0];
    const claimed = BigInt(REQUESTS) * PRICE; // balance and totalClaimed after the refund
    const voucherPayload = async (key, ceiling) => {
      const { signature } = await signVoucher(toClientEvmSigner(privateKeyToAccount(key), r.publicClient), channelId, ceiling.toString(), NETWORK);
      return { x402Version: 2, accepted: requirements, payload: { type: 'voucher', channelConfig, voucher: { channelId, maxClaimableAmount: ceiling.toString(), signature } } };
    };
    const verify = async (payload) => {
      const v = await r.facPost('verify', { x402Version: 2, paymentPayload: payload, paymentRequirements: requirements });
      return v.isValid ? 'valid' : v.invalidReason;
    };
    assert.equal(await verify(await voucherPayload(buyer.key, claimed + PRICE)), 'invalid_batch_settlement_evm_cumulative_exceeds_balance');
    assert.equal(await verify(await voucherPayload(buyer.key, claimed)), 'invalid_batch_settlement_evm_cumulative_below_claimed');
    assert.equal(await verify(await voucherPayload(r.buyers[2].key, claimed + PRICE)), 'invalid_batch_settlement_evm_voucher_signature');
    const other = await voucherPayload(buyer.key, claimed + PRICE);
    other.payload.channelConfig = { ...channelConfig, salt: `0x${'11'.repeat(32)}` };
    assert.equal(await verify(other), 'invalid_batch_settlement_evm_channel_id_mismatch');
    // settling when every claim is settled already is a refusal, not a zero-amount success
    const manager = serverScheme.createChannelManager(facilitatorClient, NETWORK, r.token);
    await assert.rejects(manager.settle(), /invalid_batch_settlement_evm_nothing_to_settle/);
  });

  test('a refund of a channel with unclaimed vouchers claims and refunds in one multicall transaction', async () => {
    const r = rig();
    const payer = r.buyers[1];
    const { scheme, paidFetch: pay } = officialBuyer(r, payer);
    const [buyerBefore, payToBefore, receiverBefore] = await Promise.all([r.balance(payer.address), r.balance(r.payTo), receiverOf(r)]);
    const charged = 3n * PRICE;
    const responses = await payRequests(pay, url, 3);
    assert.match(responses[0].transaction, /^0x[0-9a-f]{64}$/, 'the first request deposits');
    const config = await lastDepositConfig(r);
    const id = computeChannelId(config, NETWORK);
    assert.deepEqual(await channelOf(r, id), { balance: DEPOSIT, totalClaimed: 0n });

    const response = await scheme.refund(url);
    assert.equal(response.success, true, JSON.stringify(response));
    assert.equal(response.amount, (DEPOSIT - charged).toString());
    const rc = await receipt(r, response.transaction);
    gas.claimAndRefund = rc.gasUsed;
    assert.equal(getAddress(rc.to), getAddress(BATCH_SETTLEMENT_ADDRESS));
    const settleBody = JSON.parse((await fetch(`${r.facilitatorUrl}/__bodies/settle`).then((x) => x.json())).at(-1));
    assert.equal(settleBody.paymentPayload.payload.type, 'refund');
    assert.equal(settleBody.paymentPayload.payload.claims.length, 1, 'the seller completed the refund with its latest voucher');
    assert.deepEqual(eventsOf(rc, 'Claimed').map((e) => [e.channelId, e.claimAmount]), [[id, charged]]);
    assert.deepEqual(eventsOf(rc, 'Refunded').map((e) => [e.channelId, e.amount]), [[id, DEPOSIT - charged]]);
    assert.deepEqual(await channelOf(r, id), { balance: charged, totalClaimed: charged });
    assert.equal(await r.balance(payer.address), buyerBefore - charged);
    // claimed in the refund, not yet paid out
    assert.deepEqual(await receiverOf(r), { totalClaimed: receiverBefore.totalClaimed + charged, totalSettled: receiverBefore.totalSettled });
    assert.equal(await r.balance(r.payTo), payToBefore);

    const manager = serverScheme.createChannelManager(facilitatorClient, NETWORK, r.token);
    const { transaction } = await manager.settle();
    assert.deepEqual(eventsOf(await receipt(r, transaction), 'Settled').map((e) => e.amount), [charged]);
    assert.equal(await r.balance(r.payTo), payToBefore + charged);
  });

  // Last in the file: it moves the chain's clock past the withdraw delay, after which deposit
  // authorizations the clients time by the wall clock would have expired on chain.
  test('a timed withdrawal: the seller claims within the delay, the payer takes back only the rest', async () => {
    const r = rig();
    const payer = r.buyers[2];
    const payerAccount = privateKeyToAccount(payer.key);
    const { paidFetch: pay } = officialBuyer(r, payer);
    const buyerBefore = await r.balance(payer.address);
    await payRequests(pay, url, 1);
    const config = contractConfig(await lastDepositConfig(r));
    const id = computeChannelId(config, NETWORK);
    const wallet = createWalletClient({ account: payerAccount, chain: anvilChain(r.rpc), transport: http(r.rpc), cacheTime: 0 });
    const stranger = { address: r.buyers[0].address };

    assert.equal(await revertName(r, stranger, 'initiateWithdraw', [config, DEPOSIT]), 'InvalidChannel');
    assert.equal(await revertName(r, payerAccount, 'initiateWithdraw', [config, DEPOSIT + 1n]), 'WithdrawAmountExceedsAvailable');
    assert.equal(await revertName(r, payerAccount, 'initiateWithdraw', [config, 0n]), 'NothingToWithdraw');
    assert.equal(await revertName(r, payerAccount, 'finalizeWithdraw', [config]), 'WithdrawalNotPending');
    const initiated = await receipt(r, await wallet.writeContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName: 'initiateWithdraw', args: [config, DEPOSIT] }));
    gas.initiateWithdraw = initiated.gasUsed;
    const { timestamp } = await r.publicClient.getBlock({ blockNumber: initiated.blockNumber });
    assert.deepEqual(eventsOf(initiated, 'WithdrawInitiated').map((e) => [e.channelId, e.amount, e.finalizeAfter]), [[id, DEPOSIT, Number(timestamp) + WITHDRAW_DELAY]]);
    assert.deepEqual(await read(r, 'pendingWithdrawals', [id]), [DEPOSIT, Number(timestamp)]);
    assert.equal(await revertName(r, payerAccount, 'initiateWithdraw', [config, 1n]), 'WithdrawalAlreadyPending');
    assert.equal(await revertName(r, payerAccount, 'finalizeWithdraw', [config]), 'WithdrawDelayNotElapsed');
    assert.equal(await revertName(r, stranger, 'finalizeWithdraw', [config]), 'NotAuthorizedToFinalizeWithdraw');

    // the seller's one unclaimed voucher lands inside the delay
    const manager = serverScheme.createChannelManager(facilitatorClient, NETWORK, r.token);
    const claims = await manager.claim();
    assert.equal(claims.length, 1);
    assert.deepEqual(await channelOf(r, id), { balance: DEPOSIT, totalClaimed: PRICE });

    await r.publicClient.request({ method: 'evm_increaseTime', params: [WITHDRAW_DELAY] });
    await r.publicClient.request({ method: 'evm_mine', params: [] });
    const finalized = await receipt(r, await wallet.writeContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName: 'finalizeWithdraw', args: [config] }));
    gas.finalizeWithdraw = finalized.gasUsed;
    assert.deepEqual(eventsOf(finalized, 'WithdrawFinalized').map((e) => [e.channelId, e.amount]), [[id, DEPOSIT - PRICE]], 'capped at the unclaimed balance');
    assert.deepEqual(await channelOf(r, id), { balance: PRICE, totalClaimed: PRICE });
    assert.deepEqual(await read(r, 'pendingWithdrawals', [id]), [0n, 0]);
    assert.equal(await r.balance(payer.address), buyerBefore - PRICE);
  });

  // reported, not asserted: the figures to compare with the gateway's own claims later
  test('gas used', (t) => t.diagnostic(JSON.stringify(Object.fromEntries(Object.entries(gas).map(([k, v]) => [k, Number(v)])))));
});
