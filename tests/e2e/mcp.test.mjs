// Paid MCP tools on a local chain: the official MCP TypeScript SDK server behind the gateway, the
// official x402 facilitator, and the official x402 MCP client (PyPI `x402`, `x402.mcp`, on the MCP
// Python SDK) paying for a tool call. Checked on chain and at the MCP server.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { assertPaidOnChain, snapshot, useRig } from './rig.mjs';

// The Python with `x402[mcp,evm]` installed (tests/run.sh makes target/venv-mcp).
const PYTHON =
  process.env.X402_PYTHON || fileURLToPath(new URL('../../target/venv-mcp/bin/python', import.meta.url));
const CLIENT = fileURLToPath(new URL('../support/mcp_client.py', import.meta.url));

const rig = useRig({ upstream: 'mcp_server.mjs' });

async function officialClient(r, buyer, tool, args) {
  assert.ok(existsSync(PYTHON), `no Python with x402[mcp,evm] at ${PYTHON} (set X402_PYTHON)`);
  const { stdout } = await promisify(execFile)(
    PYTHON,
    [CLIENT, '--url', r.url('/mcp'), '--key', buyer.key, '--tool', tool, '--args', JSON.stringify(args), '--asset', r.token],
    { timeout: 90000 },
  );
  return JSON.parse(stdout.trim().split('\n').pop());
}

const executions = async (r) => {
  const res = await fetch(`http://${r.upstreamAuthority}/__executions`);
  return res.json();
};

describe('paid MCP tools with the official x402 MCP client', { timeout: 180000 }, () => {
  test('the client pays a priced tool once; the tool runs once; the settlement is on chain', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const before = await snapshot(r, buyer);
    const out = await officialClient(r, buyer, 'search', { q: 'chain' });
    assert.equal(out.isError, false, JSON.stringify(out));
    assert.equal(out.paymentMade, true);
    assert.equal(out.text, 'secret results for chain');
    assert.ok(out.tools.includes('search') && out.tools.includes('echo'), 'tools/list passes through');
    await assertPaidOnChain(r, out.paymentResponse, buyer);
    assert.equal((await executions(r)).search, 1, 'executed once: the unpaid probe never ran the tool');
    const calls = await r.facCalls();
    assert.equal(calls.settle - before.calls.settle, 1, 'settled once');
    assert.equal(await r.balance(buyer.address), before.balance - 10000n);
  });

  test('a free tool is served without a payment and nothing moves on chain', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    const before = await snapshot(r, buyer);
    const out = await officialClient(r, buyer, 'echo', { text: 'hello' });
    assert.equal(out.isError, false, JSON.stringify(out));
    assert.equal(out.paymentMade, false);
    assert.equal(out.text, 'hello');
    assert.equal(await r.balance(buyer.address), before.balance);
    assert.deepEqual(await r.transfersFrom(buyer.address, before.block + 1n), []);
    const calls = await r.facCalls();
    assert.equal(calls.verify, before.calls.verify);
    assert.equal(calls.settle, before.calls.settle);
  });
});
