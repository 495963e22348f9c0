// `batch-settlement` channels kept in the PostgreSQL ledger (`[journal] url`, no Redis): the
// charges a gateway kept survive its restart, and are claimed and paid out afterwards without the
// buyer ever coming back.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodePaymentResponseHeader } from '@x402/fetch';
import { BATCH_SETTLEMENT_ADDRESS, compileBatchSettlement, officialBatchBuyer } from '../support/batch.mjs';
import { GATEWAY_BIN, useRig } from './rig.mjs';

const NETWORK = 'eip155:84532';
const PRICE = 1_000n;
const PAID = 3n;

// A schema of this run's own in the machine's PostgreSQL, so that runs never see each other's
// channels (a fresh chain gives the same buyer the same channel id every run).
const SCHEMA = `e2e_batch_${process.pid}_${Date.now()}`;
const psql = (sql) => {
  const done = spawnSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', 'test', '-v', 'ON_ERROR_STOP=1', '-c', sql], { encoding: 'utf8' });
  assert.equal(done.status, 0, `psql: ${done.stderr}`);
  return done.stdout;
};
psql(`CREATE SCHEMA ${SCHEMA}`);
const JOURNAL_DIR = mkdtempSync(join(tmpdir(), 'x402-e2e-journal-'));

const ROUTES = `
[[routes]]
match = "GET /batched"
scheme = "batch-settlement"
amount = "${PRICE}"
[journal]
path = "${join(JOURNAL_DIR, 'journal.jsonl')}"
url = "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D${SCHEMA}"
`;

const rig = useRig({ batch: true, routes: ROUTES });
after(() => psql(`DROP SCHEMA ${SCHEMA} CASCADE`));
const ABI = compileBatchSettlement().abi;

describe('batch-settlement channels in the PostgreSQL ledger', () => {
  let paidFetch;
  let start;

  before(async () => {
    const r = rig();
    ({ paidFetch } = officialBatchBuyer(r, r.buyers[2]));
    start = { payTo: await r.balance(r.payTo) };
  });

  test('charges kept before a restart are in the ledger, and claimed and paid out after it with no buyer request', async () => {
    const r = rig();
    let charged = '';
    for (let i = 0n; i < PAID; i++) {
      const res = await paidFetch(r.url('/batched'));
      assert.equal(res.status, 200, `${await res.clone().text()}\n${r.gatewayLog()}`);
      await res.arrayBuffer();
      charged = decodePaymentResponseHeader(res.headers.get('payment-response')).extra.channelState.chargedCumulativeAmount;
    }
    assert.equal(charged, (PAID * PRICE).toString());
    const rows = psql(`SELECT record FROM ${SCHEMA}.x402_channels WHERE record IS NOT NULL`);
    assert.match(rows, new RegExp(`"chargedCumulativeAmount":"${charged}"`), 'the latest charge is committed in the ledger');

    // Restarted with a claim interval short enough to see: nobody pays again, yet the kept
    // vouchers are claimed and swept.
    await r.restartGateway((text) => `${text}\n[batch]\nclaim_interval = "1s"\n`);
    const listed = spawnSync(GATEWAY_BIN, ['channels', '--config', r.gatewayConfigFile, '--format', 'json'], { encoding: 'utf8' });
    assert.equal(listed.status, 0, listed.stderr);
    assert.equal(JSON.parse(listed.stdout)[0].charged, charged);
    const deadline = Date.now() + 30000;
    while ((await r.balance(r.payTo)) !== start.payTo + PAID * PRICE) {
      assert.ok(Date.now() < deadline, `the kept charges were never paid out\n${r.gatewayLog()}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const [totalClaimed, totalSettled] = await r.publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: ABI, functionName: 'receivers', args: [r.payTo, r.token] });
    assert.deepEqual({ totalClaimed, totalSettled }, { totalClaimed: PAID * PRICE, totalSettled: PAID * PRICE });
  });
});
