// The `upto` scheme on the local chain, without the gateway: Permit2 and the upto proxy at their
// canonical addresses, the official @x402/evm upto client signing a maximum, the official upto
// facilitator verifying it and settling smaller actual amounts, and what each step moved on chain.
// The gateway's metered routes rely on exactly these behaviours, so they are pinned here; the
// refusal reasons are the facilitator's own strings, which the gateway maps to its reply codes.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UptoEvmScheme, toClientEvmSigner, uptoPermit2WitnessTypes, x402UptoPermit2ProxyABI } from '@x402/evm';
import { UptoEvmScheme as UptoServerScheme } from '@x402/evm/upto/server';
import { x402Client } from '@x402/core/client';
import { BaseError, ContractFunctionRevertedError, createWalletClient, erc20Abi, getAddress, http, keccak256, maxUint256, parseEventLogs, toHex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { anvilChain } from '../support/chain.mjs';
import { PERMIT2_ADDRESS, UPTO_PROXY_ADDRESS, compileUptoProxy, permit2DomainSeparator } from '../support/upto.mjs';
import { useRig } from './rig.mjs';

const rig = useRig({ upto: true, gateway: false });

const NETWORK = 'eip155:84532';
const MAXIMUM = 1_000_000n;
const ACTUAL = 250_000n;
// the facilitator's refusal reasons, as @x402/evm 2.27.0 words them
const NO_ALLOWANCE = 'permit2_allowance_required';
const REPLAYED = 'permit2_simulation_failed';
const ABOVE_MAXIMUM = 'invalid_upto_evm_payload_settlement_exceeds_amount';
const NOT_THE_MAXIMUM = 'permit2_amount_mismatch';
const NO_FUNDS = 'permit2_insufficient_balance';

const permit2Abi = [
  { type: 'function', name: 'DOMAIN_SEPARATOR', inputs: [], outputs: [{ type: 'bytes32' }], stateMutability: 'view' },
];

function walletOf(r, key) {
  return createWalletClient({ account: privateKeyToAccount(key), chain: anvilChain(r.rpc), transport: http(r.rpc), cacheTime: 0 });
}

async function mined(r, hash) {
  return r.publicClient.waitForTransactionReceipt({ hash, timeout: 20000 });
}

async function approvePermit2(r, buyer) {
  const hash = await walletOf(r, buyer.key).writeContract({ address: r.token, abi: erc20Abi, functionName: 'approve', args: [PERMIT2_ADDRESS, maxUint256] });
  assert.equal((await mined(r, hash)).status, 'success', 'approve Permit2');
}

// The facilitator's upto kind from /supported: a seller reads `extra.facilitatorAddress` here.
async function uptoKind(r) {
  const supported = await fetch(`${r.facilitatorUrl}/supported`).then((res) => res.json());
  const kind = supported.kinds.find((k) => k.scheme === 'upto' && k.network === NETWORK && k.x402Version === 2);
  assert.ok(kind, `no upto kind in /supported: ${JSON.stringify(supported.kinds)}`);
  return kind;
}

// What a seller announces, built by the official upto server scheme from an atomic price (a
// locally deployed token has no default-asset entry, so a "$0.25" price could not be converted).
async function requirementsFor(r, maximum = MAXIMUM) {
  const seller = new UptoServerScheme();
  const price = await seller.parsePrice({ amount: maximum.toString(), asset: r.token, extra: { name: 'USDC', version: '2' } }, NETWORK);
  const base = { scheme: 'upto', network: NETWORK, amount: price.amount, asset: price.asset, payTo: r.payTo, maxTimeoutSeconds: 120, extra: price.extra };
  return seller.enhancePaymentRequirements(base, await uptoKind(r), []);
}

// The official upto client's payment for one set of requirements.
async function pay(r, buyer, requirements, { extensions } = {}) {
  const account = privateKeyToAccount(buyer.key);
  const client = x402Client.fromConfig({
    schemes: [{ network: NETWORK, client: new UptoEvmScheme(toClientEvmSigner(account, r.publicClient)) }],
    // the default controls only trust x402's built-in tokens; ours is deployed locally
    spendControls: { allowedAssets: [{ network: NETWORK, asset: r.token }] },
  });
  const paymentRequired = {
    x402Version: 2,
    resource: { url: 'http://127.0.0.1/metered', description: 'metered', mimeType: 'application/json' },
    accepts: [requirements],
    ...(extensions ? { extensions } : {}),
  };
  return client.createPaymentPayload(paymentRequired);
}

const verify = (r, paymentPayload, paymentRequirements) => r.facPost('verify', { x402Version: 2, paymentPayload, paymentRequirements });
// settling charges `amount` (the actual cost), not the signed maximum
const settle = (r, paymentPayload, requirements, amount) =>
  r.facPost('settle', { x402Version: 2, paymentPayload, paymentRequirements: { ...requirements, amount: amount.toString() } });

// The proxy's settle arguments for a signed payload, as the facilitator builds them.
function settleArgs(paymentPayload, amount) {
  const a = paymentPayload.payload.permit2Authorization;
  return [
    { permitted: { token: a.permitted.token, amount: BigInt(a.permitted.amount) }, nonce: BigInt(a.nonce), deadline: BigInt(a.deadline) },
    amount,
    a.from,
    { to: a.witness.to, facilitator: a.witness.facilitator, validAfter: BigInt(a.witness.validAfter) },
    paymentPayload.payload.signature,
  ];
}

// The custom error a call to the proxy reverts with, simulated from `account`.
async function revertName(r, account, functionName, args) {
  try {
    await r.publicClient.simulateContract({ account, address: UPTO_PROXY_ADDRESS, abi: compileUptoProxy().abi, functionName, args });
  } catch (err) {
    const reverted = err instanceof BaseError ? err.walk((e) => e instanceof ContractFunctionRevertedError) : null;
    assert.ok(reverted, `expected a contract revert, got ${err.message}`);
    return reverted.data?.errorName;
  }
  assert.fail(`${functionName} did not revert`);
}

async function tokenTransfersIn(r, receipt) {
  return parseEventLogs({ abi: erc20Abi, logs: receipt.logs, eventName: 'Transfer' })
    .filter((l) => getAddress(l.address) === getAddress(r.token))
    .map(({ args }) => ({ from: args.from, to: args.to, value: args.value }));
}

describe('upto contracts on the local chain', () => {
  test('Permit2 and the proxy sit at the canonical addresses @x402/evm uses', async () => {
    const r = rig();
    assert.equal(r.upto.permit2, getAddress(PERMIT2_ADDRESS));
    assert.equal(r.upto.uptoProxy, getAddress(UPTO_PROXY_ADDRESS));
    const separator = await r.publicClient.readContract({ address: PERMIT2_ADDRESS, abi: permit2Abi, functionName: 'DOMAIN_SEPARATOR' });
    assert.equal(separator, permit2DomainSeparator(r.chainId), 'Permit2 domain bound to its canonical address');
    const read = (functionName) => r.publicClient.readContract({ address: UPTO_PROXY_ADDRESS, abi: x402UptoPermit2ProxyABI, functionName });
    assert.equal(await read('PERMIT2'), getAddress(PERMIT2_ADDRESS));
    const witnessFields = uptoPermit2WitnessTypes.Witness.map((f) => `${f.type} ${f.name}`).join(',');
    assert.equal(await read('WITNESS_TYPEHASH'), keccak256(toHex(`Witness(${witnessFields})`)));
    assert.equal(await read('WITNESS_TYPE_STRING'), `Witness witness)TokenPermissions(address token,uint256 amount)Witness(${witnessFields})`);
  });

  test("the proxy's ABI is the one the official facilitator calls, plus InvalidAmount() and the constructor", () => {
    const canon = (abi) => abi.map((item) => JSON.stringify(sortDeep(item)));
    const ours = canon(compileUptoProxy().abi);
    const published = canon(x402UptoPermit2ProxyABI);
    assert.deepEqual(published.filter((i) => !ours.includes(i)), [], 'published ABI entries missing from ours');
    const extra = ours.filter((i) => !published.includes(i)).map((i) => JSON.parse(i)).map((i) => `${i.type} ${i.name ?? ''}`.trim());
    assert.deepEqual(extra.sort(), ['constructor', 'error InvalidAmount']);
  });
});

// key order made canonical, so two ABIs compare by content
function sortDeep(v) {
  if (Array.isArray(v)) return v.map(sortDeep);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortDeep(v[k])]));
  return v;
}

describe('official upto client and facilitator', () => {
  test('/supported names the facilitator the client must sign for', async () => {
    const r = rig();
    const kind = await uptoKind(r);
    assert.equal(kind.extra.facilitatorAddress, privateKeyToAccount(r.facilitatorKey).address);
    const req = await requirementsFor(r);
    assert.equal(req.extra.assetTransferMethod, 'permit2');
    assert.equal(req.extra.facilitatorAddress, kind.extra.facilitatorAddress);
    assert.equal(req.amount, MAXIMUM.toString());
  });

  test('without a Permit2 approval verify is refused with the reason the facilitator gives', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    const allowance = await r.publicClient.readContract({ address: r.token, abi: erc20Abi, functionName: 'allowance', args: [buyer.address, PERMIT2_ADDRESS] });
    assert.equal(allowance, 0n);
    const requirements = await requirementsFor(r);
    const payload = await pay(r, buyer, requirements);
    const v = await verify(r, payload, requirements);
    assert.deepEqual({ isValid: v.isValid, invalidReason: v.invalidReason, payer: v.payer }, { isValid: false, invalidReason: NO_ALLOWANCE, payer: buyer.address });
    const before = await r.balance(buyer.address);
    const s = await settle(r, payload, requirements, ACTUAL);
    assert.equal(s.success, false);
    assert.equal(s.errorReason, NO_ALLOWANCE);
    assert.equal(await r.balance(buyer.address), before);
  });

  test('a buyer who approved Permit2 but cannot cover the maximum is refused at verify', async () => {
    const r = rig();
    const buyer = r.brokeBuyer;
    assert.equal(await r.balance(buyer.address), 0n);
    await approvePermit2(r, buyer);
    const requirements = await requirementsFor(r);
    const v = await verify(r, await pay(r, buyer, requirements), requirements);
    assert.deepEqual({ isValid: v.isValid, invalidReason: v.invalidReason }, { isValid: false, invalidReason: NO_FUNDS });
  });

  describe('a buyer who approved Permit2', () => {
    let requirements;
    let payload;

    test('signs a maximum of 1,000,000 that verify accepts', async () => {
      const r = rig();
      const buyer = r.buyers[0];
      await approvePermit2(r, buyer);
      requirements = await requirementsFor(r);
      payload = await pay(r, buyer, requirements);
      const auth = payload.payload.permit2Authorization;
      assert.equal(payload.accepted.scheme, 'upto');
      assert.equal(auth.permitted.amount, MAXIMUM.toString());
      assert.equal(getAddress(auth.spender), getAddress(UPTO_PROXY_ADDRESS));
      assert.equal(getAddress(auth.witness.facilitator), requirements.extra.facilitatorAddress);
      assert.equal(getAddress(auth.witness.to), r.payTo);
      const v = await verify(r, payload, requirements);
      assert.equal(v.isValid, true, JSON.stringify(v));
      assert.equal(v.payer, buyer.address);
    });

    test('verify is against the maximum: requirements carrying the actual amount are refused', async () => {
      const r = rig();
      const v = await verify(r, payload, { ...requirements, amount: ACTUAL.toString() });
      assert.equal(v.isValid, false);
      assert.equal(v.invalidReason, NOT_THE_MAXIMUM);
    });

    test('settling 250,000 moves exactly 250,000 from buyer to payTo in one transaction', async () => {
      const r = rig();
      const buyer = r.buyers[0];
      const [buyerBefore, payToBefore, block] = await Promise.all([r.balance(buyer.address), r.balance(r.payTo), r.blockNumber()]);
      const s = await settle(r, payload, requirements, ACTUAL);
      assert.equal(s.success, true, JSON.stringify(s));
      assert.equal(s.amount, ACTUAL.toString());
      assert.equal(s.network, NETWORK);
      assert.equal(s.payer, buyer.address);
      assert.match(s.transaction, /^0x[0-9a-f]{64}$/);
      const receipt = await mined(r, s.transaction);
      assert.equal(receipt.status, 'success');
      assert.equal(getAddress(receipt.to), getAddress(UPTO_PROXY_ADDRESS));
      assert.equal(receipt.from, privateKeyToAccount(r.facilitatorKey).address.toLowerCase());
      assert.deepEqual(await tokenTransfersIn(r, receipt), [{ from: buyer.address, to: r.payTo, value: ACTUAL }]);
      const settled = parseEventLogs({ abi: x402UptoPermit2ProxyABI, logs: receipt.logs, eventName: 'Settled' });
      assert.equal(settled.length, 1);
      assert.equal(await r.balance(buyer.address), buyerBefore - ACTUAL);
      assert.equal(await r.balance(r.payTo), payToBefore + ACTUAL);
      assert.deepEqual(await r.transfersFrom(buyer.address, block + 1n), [{ from: buyer.address, to: r.payTo, value: ACTUAL }], 'one Transfer from the buyer');
    });

    test('settling the same payload again is refused and moves nothing', async () => {
      const r = rig();
      const buyer = r.buyers[0];
      const [before, block] = await Promise.all([r.balance(buyer.address), r.blockNumber()]);
      const s = await settle(r, payload, requirements, ACTUAL);
      assert.equal(s.success, false);
      assert.equal(s.errorReason, REPLAYED);
      assert.equal(s.transaction, '');
      assert.equal(await r.balance(buyer.address), before);
      assert.deepEqual(await r.transfersFrom(buyer.address, block + 1n), []);
    });

    test('settling above the maximum is refused and moves nothing', async () => {
      const r = rig();
      const buyer = r.buyers[0];
      const fresh = await pay(r, buyer, requirements);
      const [before, block] = await Promise.all([r.balance(buyer.address), r.blockNumber()]);
      const s = await settle(r, fresh, requirements, MAXIMUM + 1n);
      assert.equal(s.success, false);
      assert.equal(s.errorReason, ABOVE_MAXIMUM);
      assert.equal(s.transaction, '');
      assert.equal(await r.balance(buyer.address), before);
      assert.equal(await r.blockNumber(), block, 'no transaction');
    });

    test('settling 0 succeeds without a transaction, and the signature stays usable', async () => {
      const r = rig();
      const buyer = r.buyers[0];
      const fresh = await pay(r, buyer, requirements);
      const [before, block] = await Promise.all([r.balance(buyer.address), r.blockNumber()]);
      const s = await settle(r, fresh, requirements, 0n);
      assert.deepEqual({ success: s.success, transaction: s.transaction, amount: s.amount, payer: s.payer }, { success: true, transaction: '', amount: '0', payer: buyer.address });
      assert.equal(await r.blockNumber(), block, 'no transaction');
      assert.equal(await r.balance(buyer.address), before);
      // nothing was consumed on chain: the same authorization can still be charged (at most once)
      const later = await settle(r, fresh, requirements, 1n);
      assert.equal(later.success, true, JSON.stringify(later));
      assert.equal(await r.balance(buyer.address), before - 1n);
    });

    test("the proxy's settle reverts for any caller other than the witness's facilitator", async () => {
      const r = rig();
      const buyer = r.buyers[0];
      const fresh = await pay(r, buyer, requirements);
      const args = settleArgs(fresh, ACTUAL);
      const stranger = privateKeyToAccount(r.buyers[2].key);
      assert.equal(await revertName(r, stranger, 'settle', args), 'UnauthorizedFacilitator');
      // and on chain, not only in simulation: a mined, reverted transaction that moved nothing
      const before = await r.balance(buyer.address);
      const hash = await walletOf(r, r.buyers[2].key).writeContract({ address: UPTO_PROXY_ADDRESS, abi: x402UptoPermit2ProxyABI, functionName: 'settle', args, gas: 300_000n });
      const receipt = await mined(r, hash);
      assert.equal(receipt.status, 'reverted');
      assert.deepEqual(await tokenTransfersIn(r, receipt), []);
      assert.equal(await r.balance(buyer.address), before);
      // the named facilitator itself could still settle it
      const facilitator = privateKeyToAccount(r.facilitatorKey);
      const { result } = await r.publicClient.simulateContract({ account: facilitator, address: UPTO_PROXY_ADDRESS, abi: x402UptoPermit2ProxyABI, functionName: 'settle', args });
      assert.equal(result, undefined);
    });

    test("the proxy's own checks, simulated from the facilitator", async () => {
      const r = rig();
      const facilitator = privateKeyToAccount(r.facilitatorKey);
      const fresh = await pay(r, r.buyers[0], requirements);
      const args = settleArgs(fresh, ACTUAL);
      const [permit, , owner, witness, signature] = args;
      const zero = '0x0000000000000000000000000000000000000000';
      const farFuture = BigInt(Math.floor(Date.now() / 1000) + 86400);
      assert.equal(await revertName(r, facilitator, 'settle', [permit, MAXIMUM + 1n, owner, witness, signature]), 'AmountExceedsPermitted');
      assert.equal(await revertName(r, facilitator, 'settle', [permit, 0n, owner, witness, signature]), 'InvalidAmount');
      assert.equal(await revertName(r, facilitator, 'settle', [permit, ACTUAL, zero, witness, signature]), 'InvalidOwner');
      assert.equal(await revertName(r, facilitator, 'settle', [permit, ACTUAL, owner, { ...witness, to: zero }, signature]), 'InvalidDestination');
      assert.equal(await revertName(r, facilitator, 'settle', [permit, ACTUAL, owner, { ...witness, validAfter: farFuture }, signature]), 'PaymentTooEarly');
      // a witness other than the signed one fails in Permit2's signature check
      const other = { ...witness, to: r.buyers[1].address };
      assert.equal(await revertName(r, facilitator, 'settle', [permit, ACTUAL, owner, other, signature]), undefined);
    });
  });

  test('settleWithPermit: an EIP-2612 approval signed by the client replaces the approve transaction', async () => {
    const r = rig();
    const buyer = r.buyers[2];
    const allowanceOf = () => r.publicClient.readContract({ address: r.token, abi: erc20Abi, functionName: 'allowance', args: [buyer.address, PERMIT2_ADDRESS] });
    assert.equal(await allowanceOf(), 0n);
    const requirements = await requirementsFor(r);
    // a seller offering to sponsor the approval declares this extension; the client then signs one
    const payload = await pay(r, buyer, requirements, { extensions: { eip2612GasSponsoring: {} } });
    const info = payload.extensions?.eip2612GasSponsoring?.info;
    assert.ok(info, `no EIP-2612 approval in the payload: ${JSON.stringify(payload.extensions)}`);
    assert.equal(info.amount, MAXIMUM.toString());
    const v = await verify(r, payload, requirements);
    assert.equal(v.isValid, true, JSON.stringify(v));
    const before = await r.balance(buyer.address);
    const s = await settle(r, payload, requirements, ACTUAL);
    assert.equal(s.success, true, JSON.stringify(s));
    const receipt = await mined(r, s.transaction);
    assert.equal(receipt.status, 'success');
    assert.deepEqual(await tokenTransfersIn(r, receipt), [{ from: buyer.address, to: r.payTo, value: ACTUAL }]);
    assert.equal(parseEventLogs({ abi: x402UptoPermit2ProxyABI, logs: receipt.logs, eventName: 'SettledWithPermit' }).length, 1);
    assert.equal(await r.balance(buyer.address), before - ACTUAL);
    // the permit approved Permit2 for the maximum, and the transfer spent the actual amount of it
    assert.equal(await allowanceOf(), MAXIMUM - ACTUAL);
  });
});
