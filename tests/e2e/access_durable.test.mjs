// Access grants kept in the PostgreSQL ledger (`[journal] url`, no Redis): a wallet that paid for
// a window signs in after the gateway restarted, with no new payment, and the operator's `grants`
// lists it from the database.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from '@x402/fetch';
import { ExactEvmScheme, toClientEvmSigner } from '@x402/evm';
import { createSIWxClientExtension } from '@x402/extensions/sign-in-with-x';
import { privateKeyToAccount } from 'viem/accounts';
import { GATEWAY_BIN, PRICE, snapshot, useRig } from './rig.mjs';

const NETWORK = 'eip155:84532';
// A schema of this run's own, so that runs never see each other's grants.
const SCHEMA = `e2e_access_${process.pid}_${Date.now()}`;
const psql = (sql) => {
  const done = spawnSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', 'test', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8' });
  assert.equal(done.status, 0, `psql: ${done.stderr}`);
  return done.stdout;
};
psql(`CREATE SCHEMA ${SCHEMA}`);
const JOURNAL_DIR = mkdtempSync(join(tmpdir(), 'x402-e2e-access-'));

const ROUTES = `
[[routes]]
match = "GET /report"
price = "$0.01"
access = "1h"
[journal]
path = "${join(JOURNAL_DIR, 'journal.jsonl')}"
url = "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D${SCHEMA}"
`;

const rig = useRig({ routes: ROUTES, publicUrl: true });
after(() => psql(`DROP SCHEMA ${SCHEMA} CASCADE`));

describe('access grants in the PostgreSQL ledger', { timeout: 120000 }, () => {
  test('paid before a restart, signed in after it with no payment; grants lists the grant', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const account = privateKeyToAccount(buyer.key);
    const client = x402Client.fromConfig({
      schemes: [{ network: NETWORK, client: new ExactEvmScheme(toClientEvmSigner(account, r.publicClient)) }],
      spendControls: { allowedAssets: [{ network: NETWORK, asset: r.token }] },
    });
    client.registerExtension(createSIWxClientExtension({ signers: [account] }));
    const buyerFetch = wrapFetchWithPayment(fetch, client);
    const before = await snapshot(r, buyer);

    const paid = await buyerFetch(r.url('/report'));
    assert.equal(paid.status, 200, `${await paid.clone().text()}\n${r.gatewayLog()}`);
    await paid.arrayBuffer();
    assert.equal(decodePaymentResponseHeader(paid.headers.get('payment-response')).success, true);

    await r.restartGateway();
    const again = await buyerFetch(r.url('/report'));
    assert.equal(again.status, 200, `${await again.clone().text()}\n${r.gatewayLog()}`);
    await again.arrayBuffer();
    assert.equal(again.headers.get('payment-response'), null, 'signed in on the kept grant, no payment');
    assert.equal(await r.balance(buyer.address), before.balance - PRICE, 'paid once across the restart');
    assert.equal((await r.facCalls()).settle, before.calls.settle + 1);

    const listed = spawnSync(GATEWAY_BIN, ['grants', '--config', r.gatewayConfigFile, '--format', 'json'], { encoding: 'utf8' });
    assert.equal(listed.status, 0, listed.stderr);
    const grants = JSON.parse(listed.stdout);
    assert.deepEqual(grants.map((g) => [g.resource, g.payer]), [['GET /report /report', buyer.address.toLowerCase()]]);
  });
});
