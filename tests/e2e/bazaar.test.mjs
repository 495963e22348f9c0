// Listing in the Bazaar: the challenges of discoverable routes carry the `bazaar` extension, which
// the official validator (@x402/extensions/bazaar) must accept as a catalog would; the official
// client still pays such a route; a payment that changes the declared data is refused before any
// facilitator call, as the official 2.27 server refuses it.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  extractDiscoveryInfo,
  isValidRouteTemplate,
  sanitizeResourceServiceMetadata,
  validateDiscoveryExtension,
  validateDiscoveryExtensionSpec,
} from '@x402/extensions/bazaar';
import { runJson } from '../support/proc.mjs';
import { b64json, paymentV2 } from '../support/sign.mjs';
import { PRICE, assertNothingCharged, assertPaidOnChain, challenge, decodeB64Json, snapshot, useRig } from './rig.mjs';

const ROUTES = `
[[routes]]
match = "GET /listed/weather"
price = "$0.01"
description = "Weather by city"
discoverable = true
input_schema = { properties = { city = { type = "string" } }, required = ["city"] }
input_example = { city = "Paris" }
output_example = { ok = true, path = "/listed/weather" }
output_schema = { properties = { ok = { type = "boolean" } }, required = ["ok"] }
service_name = "Listed Weather"
tags = ["weather", "test"]
icon_url = "https://example.com/icon.png"
[[routes]]
match = "POST /listed/search"
price = "$0.01"
discoverable = true
input_schema = '{"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}'
input_example = { q = "x402" }
[[routes]]
match = "GET /listed/users/:id"
price = "$0.01"
discoverable = true
[[routes]]
match = "POST /listed-mcp"
mcp = true
[[routes.tools]]
name = "lookup"
description = "Look a word up"
price = "$0.01"
discoverable = true
input_schema = { type = "object", properties = { word = { type = "string" } }, required = ["word"] }
input_example = { word = "x402" }
`;

const rig = useRig({ routes: ROUTES });

// The 402 of a request with `init` (no payment), decoded.
async function challengeOf(r, path, init = {}) {
  const res = await fetch(r.url(path), init);
  assert.equal(res.status, 402, await res.clone().text());
  const header = res.headers.get('payment-required');
  assert.ok(header, 'PAYMENT-REQUIRED header present');
  return decodeB64Json(header);
}

// The payment-required result of an unpaid MCP tool call.
async function mcpChallenge(r) {
  const res = await fetch(r.url('/listed-mcp'), {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'lookup', arguments: { word: 'a' } } }),
  });
  const reply = await res.json();
  assert.ok(reply.result?.structuredContent, JSON.stringify(reply));
  return reply.result.structuredContent;
}

// What the official validator and catalog extraction say about one challenge's declaration.
function assertAccepted(required) {
  const ext = required.extensions?.bazaar;
  assert.ok(ext, `the challenge declares bazaar: ${JSON.stringify(required.extensions)}`);
  assert.deepEqual(validateDiscoveryExtension(ext), { valid: true }, JSON.stringify(ext));
  assert.deepEqual(validateDiscoveryExtensionSpec(ext), { valid: true }, JSON.stringify(ext));
  // What a catalog records from a payment that echoes the declaration.
  const payload = { x402Version: 2, resource: required.resource, accepted: required.accepts[0], payload: {}, extensions: required.extensions };
  const found = extractDiscoveryInfo(payload, required.accepts[0]);
  assert.ok(found, 'a catalog extracts the listing');
  return { ext, found };
}

describe('listing in the Bazaar', { timeout: 120000 }, () => {
  test('a GET route declares its query parameters, output and catalog fields', async () => {
    const r = rig();
    const v2 = await challengeOf(r, '/listed/weather?city=Rome');
    const { ext, found } = assertAccepted(v2);
    assert.deepEqual(ext.info.input, { type: 'http', method: 'GET', queryParams: { city: 'Paris' } });
    assert.deepEqual(ext.info.output, { type: 'json', example: { ok: true, path: '/listed/weather' } });
    assert.equal(ext.routeTemplate, undefined);
    assert.equal(found.method, 'GET');
    assert.equal(found.resourceUrl, r.url('/listed/weather'));
    assert.equal(found.description, 'Weather by city');
    assert.deepEqual(sanitizeResourceServiceMetadata(v2.resource), {
      serviceName: 'Listed Weather',
      tags: ['weather', 'test'],
      iconUrl: 'https://example.com/icon.png',
    });
    assert.deepEqual(Object.keys(v2.extensions).sort(), ['bazaar', 'payment-identifier']);
  });

  test('a POST route declares its body', async () => {
    const r = rig();
    const v2 = await challengeOf(r, '/listed/search', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"q":"a"}' });
    const { ext, found } = assertAccepted(v2);
    assert.deepEqual(ext.info.input, { type: 'http', method: 'POST', bodyType: 'json', body: { q: 'x402' } });
    assert.equal(found.method, 'POST');
  });

  test('a :param route carries its route template and the path parameters', async () => {
    const r = rig();
    const v2 = await challengeOf(r, '/listed/users/42');
    const { ext, found } = assertAccepted(v2);
    assert.equal(ext.routeTemplate, '/listed/users/:id');
    assert.ok(isValidRouteTemplate(ext.routeTemplate));
    assert.deepEqual(ext.info.input.pathParams, { id: '42' });
    assert.equal(found.resourceUrl, `http://${r.authority}/listed/users/:id`, 'catalogued once for every id');
  });

  test('an MCP tool declares its arguments in the MCP shape', async () => {
    const r = rig();
    const v2 = await mcpChallenge(r);
    const { ext, found } = assertAccepted(v2);
    assert.equal(ext.info.input.type, 'mcp');
    assert.equal(ext.info.input.toolName, 'lookup');
    assert.equal(ext.info.input.transport, 'streamable-http');
    assert.deepEqual(ext.info.input.example, { word: 'x402' });
    assert.equal(found.toolName, 'lookup');
  });

  test('routes that declare nothing carry no listing', async () => {
    const r = rig();
    const { v2 } = await challenge(r, '/paid');
    assert.deepEqual(Object.keys(v2.extensions), ['payment-identifier']);
    assert.equal(v2.resource.serviceName, undefined);
  });

  test('/.well-known/x402 lists the declared metadata', async () => {
    const r = rig();
    const doc = await (await fetch(r.url('/.well-known/x402'))).json();
    const weather = doc.resources.find((x) => x.route === 'GET /listed/weather');
    assert.equal(weather.bazaar.serviceName, 'Listed Weather');
    assert.deepEqual(weather.bazaar.inputExample, { city: 'Paris' });
    const users = doc.resources.find((x) => x.route === 'GET /listed/users/:id');
    assert.equal(users.bazaar.routeTemplate, '/listed/users/:id');
    const tool = doc.resources.find((x) => x.mcp?.name === 'lookup');
    assert.equal(tool.bazaar.toolName, 'lookup');
    const plain = doc.resources.find((x) => x.route === 'GET /paid');
    assert.equal(plain.bazaar, undefined);
  });

  test('the official v2 client pays a listed route, echoing the declaration to the facilitator', async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const before = await snapshot(r, buyer);
    const payToBefore = await r.balance(r.payTo);
    const out = await runJson('client_v2.mjs', ['--url', r.url('/listed/weather?city=Paris'), '--key', buyer.key, '--rpc', r.rpc, '--asset', r.token]);
    assert.equal(out.error, undefined, `client error: ${out.error}\n${r.gatewayLog()}`);
    assert.equal(out.status, 200, out.body);
    await assertPaidOnChain(r, out.paymentResponse, buyer);
    assert.equal(await r.balance(buyer.address), before.balance - PRICE);
    assert.equal(await r.balance(r.payTo), payToBefore + PRICE);
    const verified = await r.facLast('verify');
    assert.equal(verified.paymentPayload.extensions.bazaar.info.input.method, 'GET', 'the facilitator sees the echoed listing');
  });

  test("the facilitator's extension reports are logged, never shown to the buyer", async () => {
    const r = rig();
    const buyer = r.buyers[0];
    const setMode = (mode) =>
      fetch(`${r.facilitatorUrl}/__mode`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ verify: mode, settle: mode }) });
    await setMode('bazaarrejected');
    try {
      const before = await snapshot(r, buyer);
      const out = await runJson('client_v2.mjs', ['--url', r.url('/listed/users/9'), '--key', buyer.key, '--rpc', r.rpc, '--asset', r.token]);
      assert.equal(out.status, 200, out.body);
      await assertPaidOnChain(r, out.paymentResponse, buyer);
      assert.equal(out.paymentResponse.extensions, undefined, 'the receipt carries no extension report');
      assert.equal(out.headers['extension-responses'], undefined, 'no EXTENSION-RESPONSES header to the buyer');
      assert.equal(await r.balance(buyer.address), before.balance - PRICE);
      const log = r.gatewayLog();
      assert.match(log, /rejected the payment's extension data/);
      assert.match(log, /listing refused by the test catalog/);
    } finally {
      await setMode('normal');
    }
  });

  test('a payment that omits the echo passes', async () => {
    const r = rig();
    const buyer = r.buyers[1];
    const v2 = await challengeOf(r, '/listed/users/7');
    const res = await fetch(r.url('/listed/users/7'), { headers: { 'payment-signature': b64json(await paymentV2(buyer.key, v2)) } });
    assert.equal(res.status, 200, await res.clone().text());
  });

  test('a payment whose echo changes the declaration is refused before any facilitator call', async () => {
    const r = rig();
    const buyer = r.buyers[2];
    const v2 = await challengeOf(r, '/listed/weather?city=Oslo');
    const payment = await paymentV2(buyer.key, v2);
    const tampered = structuredClone(v2.extensions);
    tampered.bazaar.info.output.example = { ok: false, path: '/elsewhere' };
    payment.extensions = tampered;
    const before = await snapshot(r, buyer);
    const res = await fetch(r.url('/listed/weather?city=Oslo'), { headers: { 'payment-signature': b64json(payment) } });
    assert.equal(res.status, 402);
    const refused = decodeB64Json(res.headers.get('payment-required'));
    assert.equal(refused.error, 'extension_echo_mismatch');
    assert.ok(refused.extensions.bazaar, 'the refusal is a fresh challenge with the declaration');
    assert.deepEqual(await r.facCalls(), before.calls, 'no facilitator call');
    await assertNothingCharged(r, before, buyer);
  });
});
