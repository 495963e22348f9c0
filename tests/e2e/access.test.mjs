// Pay once, come back: a route with an access window, paid by the official @x402/fetch client
// with the official sign-in-with-x client extension (@x402/extensions), on the local chain. The
// first call pays (one real transfer), the next signs in and is served with no new payment; a
// sign-in that is forged, stale, replayed, for another domain or from a wallet without a grant is
// refused with the challenge again and never reaches the upstream.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from '@x402/fetch';
import { ExactEvmScheme, toClientEvmSigner } from '@x402/evm';
import { createSIWxClientExtension, createSIWxPayload, encodeSIWxHeader } from '@x402/extensions/sign-in-with-x';
import { privateKeyToAccount } from 'viem/accounts';
import { PRICE, challenge, snapshot, useRig } from './rig.mjs';

const NETWORK = 'eip155:84532';
const ROUTES = `
[[routes]]
match = "GET /report"
price = "$0.01"
access = "1h"
[[routes]]
match = "GET /other-report"
price = "$0.01"
access = "1h"
[[routes]]
match = "GET /brief"
price = "$0.01"
access = "2s"
`;

const rig = useRig({ routes: ROUTES, publicUrl: true });

// The official buyer: pays with EIP-3009 and, offered a sign-in, signs in first.
function buyerFetch(r, buyer, seen = []) {
  const account = privateKeyToAccount(buyer.key);
  const client = x402Client.fromConfig({
    schemes: [{ network: NETWORK, client: new ExactEvmScheme(toClientEvmSigner(account, r.publicClient)) }],
    spendControls: { allowedAssets: [{ network: NETWORK, asset: r.token }] },
  });
  client.registerExtension(createSIWxClientExtension({ signers: [account] }));
  const recordingFetch = async (input, init) => {
    const req = new Request(input, init);
    seen.push({ signIn: req.headers.get('sign-in-with-x'), payment: req.headers.get('payment-signature') });
    return fetch(req);
  };
  return wrapFetchWithPayment(recordingFetch, client);
}

// The sign-in challenge of a fresh 402 of `path`, with the chain the client would pick.
async function signInInfo(r, path) {
  const c = await challenge(r, path);
  const extension = c.v2.extensions['sign-in-with-x'];
  assert.ok(extension, 'the 402 offers sign-in');
  return { ...extension.info, chainId: extension.supportedChains[0].chainId, type: extension.supportedChains[0].type };
}

async function signInWith(r, path, header) {
  const res = await fetch(r.url(path), { headers: { 'SIGN-IN-WITH-X': header } });
  const body = await res.text();
  const required = res.headers.get('payment-required');
  return { status: res.status, body, required: required ? JSON.parse(Buffer.from(required, 'base64')) : null };
}

// Refused: 402 with the reason and a fresh sign-in challenge; nothing reached the upstream or moved.
async function assertRefused(r, buyer, res, before, reason) {
  assert.equal(res.status, 402, res.body);
  assert.equal(res.required.error, reason, res.body);
  assert.ok(res.required.extensions['sign-in-with-x'].info.nonce, 'the challenge again, with a nonce');
  assert.equal(await r.hits(), before.hits, 'the upstream saw nothing');
  assert.equal(await r.balance(buyer.address), before.balance, 'nothing moved');
  assert.equal((await r.facCalls()).settle, before.calls.settle, 'no settlement');
}

describe('access windows (sign-in-with-x)', { timeout: 120000 }, () => {
  test('the 402 carries the sign-in challenge for the public URL, a fresh nonce each time', async () => {
    const r = rig();
    const first = await signInInfo(r, '/report');
    const second = await signInInfo(r, '/report');
    assert.equal(first.domain, new URL(r.url('/')).host);
    assert.equal(first.uri, r.url('/report'));
    assert.equal(first.chainId, NETWORK);
    assert.equal(first.type, 'eip191');
    assert.match(first.nonce, /^[0-9a-f]{32}$/);
    assert.notEqual(first.nonce, second.nonce);
    assert.ok(Date.parse(first.expirationTime) > Date.parse(first.issuedAt));

    // The domain and URI come from [server] public_url, never from what the client says it asked.
    const spoofed = await fetch(r.url('/report'), { headers: { 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'https' } });
    const info = JSON.parse(Buffer.from(spoofed.headers.get('payment-required'), 'base64')).extensions['sign-in-with-x'].info;
    assert.equal(info.domain, first.domain);
    assert.equal(info.uri, first.uri);
    assert.deepEqual(info.resources, [first.uri]);
  });

  test('pays once, then signs in: one settlement, two upstream hits, the second without payment', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const before = await snapshot(r, buyer);
    const seen = [];
    const pay = buyerFetch(r, buyer, seen);
    const first = await pay(r.url('/report'));
    assert.equal(first.status, 200, await first.text());
    const receipt = decodePaymentResponseHeader(first.headers.get('payment-response'));
    assert.equal(receipt.success, true);
    assert.equal(await r.balance(buyer.address), before.balance - PRICE, 'paid once');
    assert.equal((await r.facCalls()).settle, before.calls.settle + 1);
    assert.equal(await r.hits(), before.hits + 1);

    const again = await pay(r.url('/report'));
    const text = await again.text();
    assert.equal(again.status, 200, text);
    assert.equal(again.headers.get('payment-response'), null, 'no payment, no receipt');
    const echo = JSON.parse(text);
    assert.equal(echo.headers['x-payment-payer']?.toLowerCase(), buyer.address.toLowerCase(), 'the upstream learns who signed in');
    assert.equal(echo.headers['sign-in-with-x'], undefined, 'the sign-in itself stays at the gateway');
    assert.equal(await r.balance(buyer.address), before.balance - PRICE, 'still paid once');
    assert.equal((await r.facCalls()).settle, before.calls.settle + 1, 'one settlement in all');
    assert.equal(await r.hits(), before.hits + 2, 'two upstream hits');
    const signedIn = seen.filter((s) => s.signIn);
    assert.ok(signedIn.length >= 2, 'the client signed in on both calls (refused the first time)');
    assert.equal(seen.at(-1).payment, null, 'the second call carried no payment');
    const metrics = await (await fetch(r.adminUrl('/metrics'))).text();
    const served = metrics.split('\n').find((l) => l.startsWith('x402_requests_total{') && l.includes('outcome="signed_in"') && l.includes('route="GET /report"'));
    assert.ok(served && Number(served.split(' ').at(-1)) >= 1, `a request served on a grant is counted signed_in:\n${served}`);

    // the sign-in that was served cannot be used again
    const replay = await signInWith(r, '/report', seen.at(-1).signIn);
    await assertRefused(r, buyer, replay, await snapshot(r, buyer), 'invalid_siwx_nonce');
  });

  test('a grant covers its own route only: another route with a window is paid for', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const before = await snapshot(r, buyer);
    const res = await buyerFetch(r, buyer)(r.url('/other-report'));
    assert.equal(res.status, 200, await res.text());
    assert.ok(res.headers.get('payment-response'), 'paid');
    assert.equal(await r.balance(buyer.address), before.balance - PRICE);
    assert.equal((await r.facCalls()).settle, before.calls.settle + 1);
  });

  test('a wallet that never paid is refused access_not_granted', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    const info = await signInInfo(r, '/report');
    const payload = await createSIWxPayload(info, privateKeyToAccount(buyer.key), r.url('/report'));
    const before = await snapshot(r, buyer);
    await assertRefused(r, buyer, await signInWith(r, '/report', encodeSIWxHeader(payload)), before, 'access_not_granted');
  });

  test('forged, foreign-domain, stale and expired sign-ins are refused', async () => {
    const r = rig();
    const payer = r.buyers[0]; // holds a grant for /report from the test above
    const account = privateKeyToAccount(payer.key);
    const other = privateKeyToAccount(r.buyers[2].key);
    const cases = [
      ['signed by another key', async (info) => ({ ...(await createSIWxPayload(info, other, r.url('/report'))), address: account.address }), 'invalid_siwx_signature'],
      ['for another domain', async (info) => createSIWxPayload({ ...info, domain: 'evil.example', uri: 'http://evil.example/report' }, account, 'http://evil.example/report'), 'invalid_siwx_domain_mismatch'],
      ['issued long ago', async (info) => createSIWxPayload({ ...info, issuedAt: new Date(Date.now() - 10 * 60_000).toISOString() }, account, r.url('/report')), 'invalid_siwx_issued_at_too_old'],
      ['expired', async (info) => createSIWxPayload({ ...info, expirationTime: new Date(Date.now() - 1000).toISOString() }, account, r.url('/report')), 'invalid_siwx_expired'],
    ];
    for (const [name, make, reason] of cases) {
      const payload = await make(await signInInfo(r, '/report'));
      const before = await snapshot(r, payer);
      const res = await signInWith(r, '/report', encodeSIWxHeader(payload));
      await assertRefused(r, payer, res, before, reason).catch((e) => {
        e.message = `${name}: ${e.message}`;
        throw e;
      });
    }
  });
  test('after the window the grant is gone: the sign-in is refused and the client pays again', async () => {
    const r = rig();
    const buyer = r.buyers[2];
    const account = privateKeyToAccount(buyer.key);
    const pay = buyerFetch(r, buyer);
    const before = await snapshot(r, buyer);
    const paid = await pay(r.url('/brief'));
    assert.equal(paid.status, 200, await paid.text());
    const signIn = async () => {
      const payload = await createSIWxPayload(await signInInfo(r, '/brief'), account, r.url('/brief'));
      return signInWith(r, '/brief', encodeSIWxHeader(payload));
    };
    const within = await signIn();
    assert.equal(within.status, 200, within.body);
    // bounded wait for the two-second window to close, checked by signing in again
    const deadline = Date.now() + 15_000;
    let after = within;
    while (after.status === 200) {
      assert.ok(Date.now() < deadline, 'the grant outlived its window');
      after = await signIn();
    }
    assert.equal(after.status, 402, after.body);
    assert.equal(after.required.error, 'access_not_granted');
    const settled = (await r.facCalls()).settle;
    const again = await pay(r.url('/brief'));
    assert.equal(again.status, 200, await again.text());
    assert.ok(again.headers.get('payment-response'), 'paid again');
    assert.equal((await r.facCalls()).settle, settled + 1);
    assert.equal(await r.balance(buyer.address), before.balance - 2n * PRICE, 'two payments in all');
  });
});
