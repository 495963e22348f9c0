// A paid MCP tool sold through a `batch-settlement` channel: the official batch client builds
// each payment (a deposit, then vouchers) from the tool's payment-required result, and follows
// each receipt; the MCP server behind the gateway is the official MCP SDK's. After the deposit,
// tool calls cost no facilitator call and no transaction.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { useRig } from './rig.mjs';
import { officialBatchBuyer } from '../support/batch.mjs';

const NETWORK = 'eip155:84532';
const PRICE = 1_000n;
const ROUTES = `
[[routes]]
match = "* /mcp-both"
mcp = true
scheme = "batch-settlement"
[[routes.tools]]
name = "search"
amount = "${PRICE}"
`;

const rig = useRig({ upstream: 'mcp_server.mjs', batch: true, routes: ROUTES });
let id = 0;
let session = null;

// One JSON-RPC message to the MCP route, in this test's MCP session.
async function rpc(r, method, params, notification = false) {
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
  if (session) headers['mcp-session-id'] = session;
  const message = notification ? { jsonrpc: '2.0', method, params } : { jsonrpc: '2.0', id: ++id, method, params };
  const res = await fetch(r.url('/mcp-both'), { method: 'POST', headers, body: JSON.stringify(message) });
  assert.ok(res.status === 200 || (notification && res.status === 202), `${method}: ${res.status} ${await res.clone().text()}`);
  session = res.headers.get('mcp-session-id') ?? session;
  return notification ? null : (await res.json()).result;
}

async function initialize(r) {
  await rpc(r, 'initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'batch-test', version: '1' } });
  await rpc(r, 'notifications/initialized', {}, true);
}

// A `tools/call` of `search`, with `payment` in `_meta` if given.
function callSearch(r, q, payment) {
  const params = { name: 'search', arguments: { q } };
  if (payment) params._meta = { 'x402/payment': payment };
  return rpc(r, 'tools/call', params);
}

const executions = async (r) => (await fetch(`http://${r.upstreamAuthority}/__executions`)).json();

describe('an MCP tool paid from a batch-settlement channel', () => {
  test('one deposit, then tool calls on vouchers with no facilitator call; each call runs the tool once', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const { scheme, client } = officialBatchBuyer(r, buyer);
    await initialize(r);
    const before = { balance: await r.balance(buyer.address), calls: await r.facCalls(), runs: (await executions(r)).search ?? 0 };

    const cumulative = [];
    for (let i = 0; i < 3; i++) {
      const unpaid = await callSearch(r, `q${i}`);
      assert.equal(unpaid.isError, true, JSON.stringify(unpaid));
      const required = unpaid.structuredContent;
      assert.equal(required.accepts[0].scheme, 'batch-settlement');
      const payment = await client.createPaymentPayload(required);
      const paid = await callSearch(r, `q${i}`, payment);
      assert.equal(paid.isError ?? false, false, `${JSON.stringify(paid)}\n${r.gatewayLog()}`);
      assert.equal(paid.content[0].text, `secret results for q${i}`);
      const settleResponse = paid._meta['x402/payment-response'];
      assert.equal(settleResponse.success, true, JSON.stringify(settleResponse));
      cumulative.push(settleResponse.extra.channelState.chargedCumulativeAmount);
      // What @x402/fetch does with a receipt: the scheme's hook keeps the channel's state.
      await scheme.schemeHooks.onPaymentResponse({ paymentPayload: payment, requirements: payment.accepted, settleResponse });
      if (i === 0) {
        assert.equal(payment.payload.type, 'deposit');
        assert.match(settleResponse.transaction, /^0x[0-9a-f]{64}$/);
        before.afterDeposit = await r.facCalls();
      } else {
        assert.equal(payment.payload.type, 'voucher');
        assert.equal(settleResponse.transaction, '');
      }
    }
    assert.deepEqual(cumulative, ['1000', '2000', '3000']);
    assert.deepEqual(await r.facCalls(), before.afterDeposit, 'vouchers cost no facilitator call');
    assert.equal((await executions(r)).search - before.runs, 3, 'the tool ran once per paid call, never for an unpaid one');
    assert.equal(await r.balance(buyer.address), before.balance - 10n * PRICE, 'only the deposit left the buyer');
  });
});
