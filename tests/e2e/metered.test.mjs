// Metered (`upto`) routes through the gateway, paid by the official @x402/fetch + @x402/evm upto
// client and settled by the official upto facilitator on the local chain: whatever the upstream
// reports (Settlement-Overrides, a usage header priced per unit, an amount header, nothing, a
// failure), exactly the charge moves on chain, never above the signed maximum, and an
// authorization buys one request only.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from '@x402/fetch';
import { UptoEvmScheme, toClientEvmSigner } from '@x402/evm';
import { createWalletClient, erc20Abi, getAddress, http, maxUint256 } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { anvilChain } from '../support/chain.mjs';
import { PERMIT2_ADDRESS } from '../support/upto.mjs';
import { challenge, decodeB64Json, useRig } from './rig.mjs';

const NETWORK = 'eip155:84532';
const MAXIMUM = 1_000_000n; // "$1" of a 6-decimal token
const UNIT = 1_000n; // "$0.001"

// The settlement journal, to see what the gateway recorded for each payment.
const JOURNAL = join(mkdtempSync(join(tmpdir(), 'x402-metered-')), 'journal.jsonl');
const journal = () =>
  readFileSync(JOURNAL, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line));

const ROUTES = `
[journal]
path = "${JOURNAL}"
[[routes]]
match = "GET /metered/overrides"
scheme = "upto"
price = "$1"
[[routes]]
match = "GET /metered/units"
scheme = "upto"
price = "$1"
usage_header = "X-Units"
unit_price = "$0.001"
[[routes]]
match = "GET /metered/units/status/500"
scheme = "upto"
price = "$1"
usage_header = "X-Units"
unit_price = "$0.001"
[[routes]]
match = "GET /metered/amount"
scheme = "upto"
amount = "1000000"
amount_header = "X-Cost"
usage_fallback = "nothing"
[[routes]]
match = "POST /llm/json"
scheme = "upto"
price = "$1"
usage_json = "usage.total_tokens"
unit_price = "$0.001"
[[routes]]
match = "POST /llm/json/status/500"
scheme = "upto"
price = "$1"
usage_json = "usage.total_tokens"
unit_price = "$0.001"
[[routes]]
match = "GET /llm/stream"
scheme = "upto"
price = "$1"
usage_json = "usage.total_tokens"
unit_price = "$0.001"
[[routes]]
match = "GET /llm/stream/cut"
scheme = "upto"
price = "$1"
usage_json = "usage.total_tokens"
unit_price = "$0.001"
`;

const rig = useRig({ upto: true, routes: ROUTES });

// `?h=Name:value` asks the test upstream to answer with that header.
const withHeaders = (path, headers) => {
  const query = Object.entries(headers)
    .map(([name, value]) => `h=${encodeURIComponent(`${name}:${value}`)}`)
    .join('&');
  return query ? `${path}?${query}` : path;
};
const overrides = (amount) => ({ 'Settlement-Overrides': JSON.stringify({ amount }) });

const approved = new Set();
async function approvePermit2(r, buyer) {
  if (approved.has(buyer.address)) return;
  const wallet = createWalletClient({ account: privateKeyToAccount(buyer.key), chain: anvilChain(r.rpc), transport: http(r.rpc) });
  const hash = await wallet.writeContract({ address: r.token, abi: erc20Abi, functionName: 'approve', args: [PERMIT2_ADDRESS, maxUint256] });
  assert.equal((await r.publicClient.waitForTransactionReceipt({ hash })).status, 'success');
  approved.add(buyer.address);
}

function uptoClient(r, buyer) {
  const account = privateKeyToAccount(buyer.key);
  return x402Client.fromConfig({
    schemes: [{ network: NETWORK, client: new UptoEvmScheme(toClientEvmSigner(account, r.publicClient)) }],
    // the default controls only trust x402's built-in tokens; ours is deployed locally
    spendControls: { allowedAssets: [{ network: NETWORK, asset: r.token }] },
  });
}

// One paid request by the official client; `sent` keeps the PAYMENT-SIGNATURE it produced.
async function pay(r, buyer, path, init) {
  await approvePermit2(r, buyer);
  const sent = [];
  const recordingFetch = async (input, init) => {
    const req = new Request(input, init);
    const signature = req.headers.get('payment-signature');
    if (signature) sent.push(signature);
    return fetch(req);
  };
  const res = await wrapFetchWithPayment(recordingFetch, uptoClient(r, buyer))(r.url(path), init);
  const body = await res.text();
  const header = res.headers.get('payment-response');
  return { status: res.status, body, headers: res.headers, receipt: header ? decodePaymentResponseHeader(header) : null, sent };
}

async function balances(r, buyer) {
  const [buyerBalance, payTo, block, calls] = await Promise.all([r.balance(buyer.address), r.balance(r.payTo), r.blockNumber(), r.facCalls()]);
  return { buyer: buyerBalance, payTo, block, calls };
}

// Exactly `amount` moved from the buyer to payTo, in the one transaction the receipt names.
async function assertCharged(r, buyer, before, res, amount) {
  assert.equal(res.status, 200, res.body);
  assert.equal(res.headers.get('settlement-overrides'), null, 'Settlement-Overrides never reaches the client');
  assert.ok(res.receipt, 'PAYMENT-RESPONSE');
  assert.equal(res.receipt.success, true, JSON.stringify(res.receipt));
  assert.equal(res.receipt.amount, amount.toString());
  assert.match(res.receipt.transaction, /^0x[0-9a-f]{64}$/);
  const { receipt, transfers } = await r.transfersIn(res.receipt.transaction);
  assert.equal(receipt.status, 'success');
  assert.deepEqual(transfers, [{ from: getAddress(buyer.address), to: getAddress(r.payTo), value: amount }]);
  assert.deepEqual(await r.transfersFrom(buyer.address, before.block + 1n), [{ from: getAddress(buyer.address), to: getAddress(r.payTo), value: amount }], 'one Transfer from the buyer');
  assert.equal(await r.balance(buyer.address), before.buyer - amount);
  assert.equal(await r.balance(r.payTo), before.payTo + amount);
  const calls = await r.facCalls();
  assert.equal(calls.settle, (before.calls.settle ?? 0) + 1, 'one settlement');
  const settled = journal().filter((e) => e.transaction === res.receipt.transaction);
  assert.deepEqual(settled.map((e) => [e.state, e.amount]), [['settled', amount.toString()]], 'the journal records the charge');
}

async function assertNothingMoved(r, buyer, before) {
  assert.equal(await r.balance(buyer.address), before.buyer, 'buyer balance unchanged');
  assert.equal(await r.balance(r.payTo), before.payTo, 'payTo balance unchanged');
  assert.deepEqual(await r.transfersFrom(buyer.address, before.block + 1n), [], 'no Transfer from the buyer');
  assert.equal((await r.facCalls()).settle ?? 0, before.calls.settle ?? 0, 'no /settle');
}

async function resend(r, path, signature) {
  const res = await fetch(r.url(path), { headers: { 'PAYMENT-SIGNATURE': signature } });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

describe('metered (upto) routes', { timeout: 180000 }, () => {
  test('the challenge is upto for the maximum, through Permit2, naming the facilitator from /supported', async () => {
    const r = rig();
    const c = await challenge(r, '/metered/units');
    assert.equal(c.status, 402);
    const [option] = c.v2.accepts;
    assert.equal(option.scheme, 'upto');
    assert.equal(option.amount, MAXIMUM.toString());
    assert.equal(option.extra.assetTransferMethod, 'permit2');
    const supported = await fetch(`${r.facilitatorUrl}/supported`).then((res) => res.json());
    const kind = supported.kinds.find((k) => k.scheme === 'upto' && k.network === NETWORK);
    assert.equal(option.extra.facilitatorAddress, getAddress(kind.extra.facilitatorAddress));
    // read once: every challenge names the same address
    const again = await challenge(r, '/metered/overrides');
    assert.equal(again.v2.accepts[0].extra.facilitatorAddress, option.extra.facilitatorAddress);
  });

  const cases = [
    ['Settlement-Overrides, atomic', withHeaders('/metered/overrides', overrides('250000')), 250_000n],
    ['Settlement-Overrides, percent of the maximum', withHeaders('/metered/overrides', overrides('12.5%')), 125_000n],
    ['Settlement-Overrides, dollars', withHeaders('/metered/overrides', overrides('$0.05')), 50_000n],
    ['Settlement-Overrides wins over the usage header', withHeaders('/metered/units', { ...overrides('7000'), 'X-Units': '3' }), 7_000n],
    ['usage header × unit price', withHeaders('/metered/units', { 'X-Units': '42' }), 42n * UNIT],
    ['amount header', withHeaders('/metered/amount', { 'X-Cost': '4242' }), 4_242n],
    ['usage above the maximum: the maximum', withHeaders('/metered/units', { 'X-Units': '5000' }), MAXIMUM],
    ['Settlement-Overrides above the maximum: the maximum', withHeaders('/metered/overrides', overrides('$3')), MAXIMUM],
    ['missing usage, fallback "maximum"', '/metered/units', MAXIMUM],
    ['unreadable usage, fallback "maximum"', withHeaders('/metered/units', { 'X-Units': 'lots' }), MAXIMUM],
  ];
  for (const [name, path, amount] of cases) {
    test(`${name}: exactly ${amount} moves, in one settlement`, async () => {
      const r = rig();
      const buyer = r.buyers[0];
      await approvePermit2(r, buyer);
      const before = await balances(r, buyer);
      const res = await pay(r, buyer, path);
      await assertCharged(r, buyer, before, res, amount);
    });
  }

  test('a zero charge: content delivered, no transaction, balances unchanged, receipt for 0', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    await approvePermit2(r, buyer);
    const before = await balances(r, buyer);
    const path = withHeaders('/metered/overrides', overrides('0'));
    const res = await pay(r, buyer, path);
    assert.equal(res.status, 200, res.body);
    assert.equal(JSON.parse(res.body).ok, true, 'the content');
    assert.equal(res.headers.get('settlement-overrides'), null);
    assert.deepEqual(
      { success: res.receipt.success, transaction: res.receipt.transaction, amount: res.receipt.amount, network: res.receipt.network },
      { success: true, transaction: '', amount: '0', network: NETWORK },
    );
    assert.equal(getAddress(res.receipt.payer), getAddress(buyer.address));
    assert.equal(await r.blockNumber(), before.block, 'no transaction');
    await assertNothingMoved(r, buyer, before);
    const last = journal().filter((e) => getAddress(e.payer) === getAddress(buyer.address)).at(-1);
    assert.deepEqual([last.state, last.amount, last.reason, last.transaction], ['settled', '0', 'nothing_used', ''], 'journaled settled for 0');
    // Permit2 would still honour the authorization, so the gateway must not: the resend is refused
    const hits = await r.hits();
    const again = await resend(r, path, res.sent.at(-1));
    assert.equal(again.status, 402, again.body);
    assert.equal(await r.hits(), hits, 'the resend never reached the upstream');
    await assertNothingMoved(r, buyer, before);
  });

  test('missing usage with fallback "nothing": charged 0, nothing moves', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    await approvePermit2(r, buyer);
    const before = await balances(r, buyer);
    const res = await pay(r, buyer, '/metered/amount');
    assert.equal(res.status, 200, res.body);
    assert.equal(res.receipt.amount, '0');
    assert.equal(res.receipt.transaction, '');
    await assertNothingMoved(r, buyer, before);
  });

  test('upstream 500: answered 500, nothing charged, nothing moves', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    await approvePermit2(r, buyer);
    const before = await balances(r, buyer);
    const res = await pay(r, buyer, withHeaders('/metered/units/status/500', { 'X-Units': '10', ...overrides('5000') }));
    assert.equal(res.status, 500, res.body);
    assert.equal(res.receipt, null, 'no PAYMENT-RESPONSE');
    assert.equal(res.headers.get('settlement-overrides'), null);
    await assertNothingMoved(r, buyer, before);
    const last = journal().filter((e) => getAddress(e.payer) === getAddress(buyer.address)).at(-1);
    assert.deepEqual([last.state, last.reason], ['not_charged', 'upstream_status_500']);
  });

  test('the same authorization sent again is refused with 402 and nothing moves', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    await approvePermit2(r, buyer);
    const path = withHeaders('/metered/overrides', overrides('1000'));
    const first = await pay(r, buyer, path);
    assert.equal(first.status, 200, first.body);
    assert.equal(first.receipt.amount, '1000');
    const before = await balances(r, buyer);
    const hits = await r.hits();
    const again = await resend(r, path, first.sent.at(-1));
    assert.equal(again.status, 402, again.body);
    assert.equal(await r.hits(), hits, 'the replay never reached the upstream');
    await assertNothingMoved(r, buyer, before);
  });

  // A payment whose terms differ from the route's, signed by the buyer or not, is refused by the
  // gateway's own checks: the facilitator is never asked and nothing moves.
  const tamperings = [
    ['a smaller maximum (accepted and permitted)', (p) => {
      p.accepted.amount = '1000';
      p.payload.permit2Authorization.permitted.amount = '1000';
    }],
    ['another maximum in the authorization only', (p) => {
      p.payload.permit2Authorization.permitted.amount = '2000000';
    }],
    ['another recipient', (p) => {
      p.payload.permit2Authorization.witness.to = '0x0000000000000000000000000000000000000bad';
    }],
    ['another facilitator address', (p) => {
      p.payload.permit2Authorization.witness.facilitator = '0x0000000000000000000000000000000000000bad';
    }],
    ['another facilitator address in accepted and the witness', (p) => {
      p.accepted.extra.facilitatorAddress = '0x0000000000000000000000000000000000000Bad';
      p.payload.permit2Authorization.witness.facilitator = '0x0000000000000000000000000000000000000bad';
    }],
  ];
  for (const [name, tamper] of tamperings) {
    test(`tampered: ${name} is refused before any facilitator call`, async () => {
      const r = rig();
      const buyer = r.buyers[2];
      await approvePermit2(r, buyer);
      const c = await challenge(r, '/metered/overrides');
      const payload = await uptoClient(r, buyer).createPaymentPayload(c.v2);
      tamper(payload);
      const before = await balances(r, buyer);
      const hits = await r.hits();
      const res = await resend(r, '/metered/overrides', Buffer.from(JSON.stringify(payload)).toString('base64'));
      assert.equal(res.status, 402, res.body);
      const refusal = decodeB64Json(res.headers.get('payment-required'));
      assert.ok(refusal.error, 'the refusal says why');
      assert.deepEqual(await r.facCalls(), before.calls, 'the facilitator saw no call');
      assert.equal(await r.hits(), hits, 'the upstream saw nothing');
      await assertNothingMoved(r, buyer, before);
    });
  }
  // Without a Permit2 approval no upto payment can settle: the facilitator says so at /verify and
  // the buyer is told with 412 and the challenge (as the official server answers), so that it can
  // approve and pay again. Nothing reaches the upstream and nothing moves.
  test('no Permit2 allowance: 412 permit2_allowance_required with the challenge, upstream untouched', async () => {
    const r = rig();
    const buyer = r.buyers[2];
    const wallet = createWalletClient({ account: privateKeyToAccount(buyer.key), chain: anvilChain(r.rpc), transport: http(r.rpc) });
    const revoke = await wallet.writeContract({ address: r.token, abi: erc20Abi, functionName: 'approve', args: [PERMIT2_ADDRESS, 0n] });
    assert.equal((await r.publicClient.waitForTransactionReceipt({ hash: revoke })).status, 'success');
    approved.delete(buyer.address);
    const c = await challenge(r, '/metered/overrides');
    const payload = await uptoClient(r, buyer).createPaymentPayload(c.v2);
    const before = await balances(r, buyer);
    const hits = await r.hits();
    const res = await resend(r, withHeaders('/metered/overrides', overrides('1000')), Buffer.from(JSON.stringify(payload)).toString('base64'));
    assert.equal(res.status, 412, res.body);
    const required = decodeB64Json(res.headers.get('payment-required'));
    assert.equal(required.error, 'permit2_allowance_required');
    assert.equal(required.accepts[0].scheme, 'upto', 'the challenge comes with it');
    assert.equal((await r.facCalls()).verify, before.calls.verify + 1, 'the facilitator was asked once');
    assert.equal(await r.hits(), hits, 'the upstream saw nothing');
    await assertNothingMoved(r, buyer, before);
    // approved, the same buyer pays
    const paid = await pay(r, buyer, withHeaders('/metered/overrides', overrides('1000')));
    await assertCharged(r, buyer, before, paid, 1000n);
  });
});

// Server-sent events as {event, data} (the default event type is `message`).
function sseEvents(text) {
  return text
    .split(/\n\n/)
    .filter((block) => block.trim())
    .map((block) => {
      const lines = block.split('\n');
      const event = lines.find((l) => l.startsWith('event:'))?.slice(6).trim() ?? 'message';
      const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      return { event, data };
    });
}

describe('metered routes reading the usage from the response body (usage_json)', { timeout: 180000 }, () => {
  const REQUEST = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] });
  const post = { method: 'POST', headers: { 'content-type': 'application/json' }, body: REQUEST };

  test('a JSON answer: usage.total_tokens × unit price moves, the whole body and the receipt reach the client', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    await approvePermit2(r, buyer);
    const before = await balances(r, buyer);
    const res = await pay(r, buyer, '/llm/json?tokens=42', post);
    await assertCharged(r, buyer, before, res, 42n * UNIT);
    const answer = JSON.parse(res.body);
    assert.equal(answer.choices[0].message.content, 'hello', 'the content');
    assert.equal(answer.usage.total_tokens, 42, 'the usage is passed on');
    assert.equal(res.headers.get('content-length'), String(Buffer.byteLength(res.body)));
    // the gateway sent the request on as the proxied path does: the body whole, the payer named,
    // the payment itself removed
    assert.equal(answer.echo.bodySha256, createHash('sha256').update(REQUEST).digest('hex'));
    assert.equal(getAddress(answer.echo.headers['x-payment-payer']), getAddress(buyer.address));
    assert.equal(answer.echo.headers['x-payment-amount'], MAXIMUM.toString());
    assert.equal(answer.echo.headers['payment-signature'], undefined);
    assert.ok(answer.echo.headers['x-forwarded-for'], 'X-Forwarded-For');
    assert.equal(answer.echo.headers['accept-encoding'], 'identity', 'an answer the gateway can read');
  });

  test('a JSON answer with Settlement-Overrides: the head still wins over the body', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    await approvePermit2(r, buyer);
    const before = await balances(r, buyer);
    const res = await pay(r, buyer, `${withHeaders('/llm/json', overrides('7000'))}&tokens=42`, post);
    await assertCharged(r, buyer, before, res, 7_000n);
  });

  test('an event stream: every event passes, the last usage is charged, the receipt is the final event', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    await approvePermit2(r, buyer);
    const before = await balances(r, buyer);
    const res = await pay(r, buyer, '/llm/stream?tokens=250');
    assert.equal(res.headers.get('payment-response'), null, 'no header: the charge is known after the stream');
    assert.match(res.headers.get('content-type'), /^text\/event-stream/);
    const events = sseEvents(res.body);
    const words = events.slice(0, 3).map((e) => JSON.parse(e.data).choices[0].delta.content);
    assert.deepEqual(words, ['hel', 'lo', '!'], 'every chunk, in order');
    assert.equal(JSON.parse(events[3].data).usage.total_tokens, 250, 'the usage chunk');
    assert.equal(events[4].data, '[DONE]');
    assert.equal(events.length, 6, 'the upstream\'s five events and the receipt');
    const last = events.at(-1);
    assert.equal(last.event, 'payment-response');
    await assertCharged(r, buyer, before, { ...res, receipt: decodePaymentResponseHeader(last.data) }, 250n * UNIT);
  });

  test('an event stream the upstream cuts after its usage: what was reported is charged, the receipt still ends it', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    await approvePermit2(r, buyer);
    const before = await balances(r, buyer);
    const res = await pay(r, buyer, '/llm/stream/cut?tokens=77');
    const events = sseEvents(res.body);
    assert.deepEqual(events.map((e) => e.event), ['message', 'message', 'message', 'message', 'payment-response'], 'the four events sent, then the receipt');
    assert.equal(JSON.parse(events[3].data).usage.total_tokens, 77);
    await assertCharged(r, buyer, before, { ...res, receipt: decodePaymentResponseHeader(events.at(-1).data) }, 77n * UNIT);
  });

  test('a JSON answer without usage: the route\'s fallback (the maximum) moves, the body is delivered', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    await approvePermit2(r, buyer);
    const before = await balances(r, buyer);
    const res = await pay(r, buyer, '/llm/json', post);
    await assertCharged(r, buyer, before, res, MAXIMUM);
    const answer = JSON.parse(res.body);
    assert.equal(answer.usage, undefined);
    assert.equal(answer.choices[0].message.content, 'hello');
  });

  test('a request body too large to carry is refused 413 before any payment or upstream call', async () => {
    const r = rig();
    const hits = await r.hits();
    const calls = await r.facCalls();
    const res = await fetch(r.url('/llm/json?tokens=1'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(70 * 1024) });
    assert.equal(res.status, 413, await res.text());
    assert.equal(await r.hits(), hits, 'the upstream saw nothing');
    assert.deepEqual(await r.facCalls(), calls, 'the facilitator saw nothing');
  });

  test('an upstream 500: relayed, nothing charged, nothing moves', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    await approvePermit2(r, buyer);
    const before = await balances(r, buyer);
    const res = await pay(r, buyer, '/llm/json/status/500?tokens=42', post);
    assert.equal(res.status, 500, res.body);
    assert.deepEqual(JSON.parse(res.body), { error: 'upstream failure' }, 'the upstream\'s answer');
    assert.equal(res.receipt, null, 'no PAYMENT-RESPONSE');
    await assertNothingMoved(r, buyer, before);
    const last = journal().filter((e) => getAddress(e.payer) === getAddress(buyer.address)).at(-1);
    assert.deepEqual([last.state, last.reason], ['not_charged', 'upstream_status_500']);
  });
});
