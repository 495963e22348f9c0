// Two gateway replicas on one Redis, behind one public name, driven by the official clients: a
// wallet that paid on one replica signs in on the other (one grant for all), a sign-in used on one
// is refused on the other, and an `upto` authorization settled by one replica is refused by the
// other; exactly the charge moves on chain.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from '@x402/fetch';
import { ExactEvmScheme, UptoEvmScheme, toClientEvmSigner } from '@x402/evm';
import { createSIWxClientExtension } from '@x402/extensions/sign-in-with-x';
import { createWalletClient, erc20Abi, http, maxUint256 } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { anvilChain } from '../support/chain.mjs';
import { PERMIT2_ADDRESS } from '../support/upto.mjs';
import { GATEWAY_BIN, PRICE, decodeB64Json, snapshot, useRig } from './rig.mjs';

const NETWORK = 'eip155:84532';
const ROUTES = `
[[routes]]
match = "GET /report"
price = "$0.01"
access = "1h"
[[routes]]
match = "GET /metered"
scheme = "upto"
price = "$1"
`;

const rig = useRig({ upto: true, publicUrl: true, replicas: 2, routes: ROUTES });
const spendControls = (r) => ({ allowedAssets: [{ network: NETWORK, asset: r.token }] });

// The official exact buyer with the sign-in-with-x extension, calling the public name (replica
// 0's address) through a "load balancer" that sends every request to `replica.current`; `seen`
// records its requests' headers.
function accessBuyer(r, buyer, seen, replica) {
  const account = privateKeyToAccount(buyer.key);
  const client = x402Client.fromConfig({
    schemes: [{ network: NETWORK, client: new ExactEvmScheme(toClientEvmSigner(account, r.publicClient)) }],
    spendControls: spendControls(r),
  });
  client.registerExtension(createSIWxClientExtension({ signers: [account] }));
  return wrapFetchWithPayment(async (input, init) => {
    const req = new Request(input, init);
    seen.push({ signIn: req.headers.get('sign-in-with-x'), payment: req.headers.get('payment-signature') });
    const target = new URL(req.url);
    const balanced = r.url(`${target.pathname}${target.search}`, replica.current);
    const res = await fetch(new Request(balanced, req));
    // What the buyer sees is an answer of the public name.
    return new Response(res.body, { status: res.status, statusText: res.statusText, headers: res.headers });
  }, client);
}

describe('replicas on one Redis with the official clients', { timeout: 120000 }, () => {
  test('paid on replica 0, signed in on replica 1; a used sign-in is refused by replica 0', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const before = await snapshot(r, buyer);
    const seen = [];
    const replica = { current: 0 };
    const buyerFetch = accessBuyer(r, buyer, seen, replica);
    const paid = await buyerFetch(r.url('/report'));
    assert.equal(paid.status, 200, `${await paid.clone().text()}\n${r.gatewayLog()}`);
    await paid.arrayBuffer();
    assert.ok(paid.headers.get('payment-response'), 'paid');

    replica.current = 1;
    const signedIn = await buyerFetch(r.url('/report'));
    assert.equal(signedIn.status, 200, await signedIn.clone().text());
    await signedIn.arrayBuffer();
    assert.equal(signedIn.headers.get('payment-response'), null, 'served on the grant, no payment');
    assert.equal(seen.at(-1).payment, null);
    assert.equal(await r.balance(buyer.address), before.balance - PRICE, 'paid once for both replicas');
    assert.equal((await r.facCalls()).settle, before.calls.settle + 1);
    assert.equal(await r.hits(), before.hits + 2);

    const hits = await r.hits();
    const replayed = await fetch(r.url('/report', 0), { headers: { 'SIGN-IN-WITH-X': seen.at(-1).signIn } });
    assert.equal(replayed.status, 402);
    await replayed.arrayBuffer();
    assert.equal(decodeB64Json(replayed.headers.get('payment-required')).error, 'invalid_siwx_nonce');
    assert.equal(await r.hits(), hits, 'the replayed sign-in reached nothing');

    // The operator sees the grant every replica honours.
    const listed = spawnSync(GATEWAY_BIN, ['grants', '--config', r.gatewayConfigFile, '--format', 'json'], { encoding: 'utf8' });
    assert.equal(listed.status, 0, listed.stderr);
    const grants = JSON.parse(listed.stdout);
    assert.equal(grants.length, 1, listed.stdout);
    assert.equal(grants[0].payer.toLowerCase(), buyer.address.toLowerCase());
    assert.equal(grants[0].resource, 'GET /report /report');
    const left = grants[0].until_ms - Date.now();
    assert.ok(left > 3500_000 && left <= 3600_000, `about an hour left: ${left} ms`);
  });

  test('an upto authorization settled by replica 0 is refused by replica 1, and only the charge moved', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    const wallet = createWalletClient({ account: privateKeyToAccount(buyer.key), chain: anvilChain(r.rpc), transport: http(r.rpc) });
    const approval = await wallet.writeContract({ address: r.token, abi: erc20Abi, functionName: 'approve', args: [PERMIT2_ADDRESS, maxUint256] });
    assert.equal((await r.publicClient.waitForTransactionReceipt({ hash: approval })).status, 'success');
    const client = x402Client.fromConfig({
      schemes: [{ network: NETWORK, client: new UptoEvmScheme(toClientEvmSigner(privateKeyToAccount(buyer.key), r.publicClient)) }],
      spendControls: spendControls(r),
    });
    const sent = [];
    const uptoFetch = wrapFetchWithPayment(async (input, init) => {
      const req = new Request(input, init);
      if (req.headers.get('payment-signature')) sent.push(req.headers.get('payment-signature'));
      return fetch(req);
    }, client);
    const before = await snapshot(r, buyer);
    const path = `/metered?h=${encodeURIComponent('Settlement-Overrides:{"amount":"1234"}')}`;
    const res = await uptoFetch(r.url(path, 0));
    assert.equal(res.status, 200, `${await res.clone().text()}\n${r.gatewayLog()}`);
    await res.arrayBuffer();
    const receipt = decodePaymentResponseHeader(res.headers.get('payment-response'));
    assert.equal(receipt.amount, '1234');
    assert.equal(await r.balance(buyer.address), before.balance - 1234n);

    const hits = await r.hits();
    const again = await fetch(r.url(path, 1), { headers: { 'PAYMENT-SIGNATURE': sent.at(-1) } });
    assert.equal(again.status, 402);
    await again.arrayBuffer();
    assert.match(decodeB64Json(again.headers.get('payment-required')).error, /already_used|replay|in_use/);
    assert.equal(await r.hits(), hits, 'the copy never reached the upstream');
    assert.equal(await r.balance(buyer.address), before.balance - 1234n, 'nothing more moved');
  });
});
