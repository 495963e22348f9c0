// Benchmark only: the official @x402/express middleware on the same paid route, price and stub
// facilitator as the gateway's benchmark configuration; what a seller would otherwise deploy.
//   node bench/express_server.mjs --port 18403 --facilitator http://127.0.0.1:18081
// Prints {"ready":true,"port":N} once the middleware has synced with the facilitator.
import { createRequire } from 'node:module';

// The npm packages live in tests/ (one lock file for the whole repository).
const require = createRequire(new URL('../tests/package.json', import.meta.url));
const express = require('express');
const { paymentMiddleware, x402ResourceServer } = require('@x402/express');
const { HTTPFacilitatorClient } = require('@x402/core/server');
const { ExactEvmScheme } = require('@x402/evm/exact/server');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const port = Number(arg('port', '18403'));
const facilitatorUrl = arg('facilitator', 'http://127.0.0.1:18081');
const payTo = arg('pay-to', '0x70997970C51812dc3A010C7d01b50e0d17dc79C8');
// Must match bench/gateway.toml: $0.01 of USDC on Base Sepolia, authorizations valid for an hour.
const NETWORK = 'eip155:84532';
const USDC = '0x036CbD53842c5426634e7929541eC2318f3dCF7e';
// The same bytes examples/bench_upstream.rs answers.
const BODY = '{"ok":true,"data":"benchmark payload","items":[1,2,3]}';

const resourceServer = new x402ResourceServer(new HTTPFacilitatorClient({ url: facilitatorUrl }))
  .register(NETWORK, new ExactEvmScheme());

const app = express();
app.disable('x-powered-by');
app.disable('etag');
app.use(
  paymentMiddleware(
    {
      'GET /paid': {
        accepts: {
          scheme: 'exact',
          network: NETWORK,
          payTo,
          price: { amount: '10000', asset: USDC, extra: { name: 'USDC', version: '2' } },
          maxTimeoutSeconds: 3600,
        },
        description: 'paid data',
        mimeType: 'application/json',
      },
    },
    resourceServer,
  ),
);
app.get('/paid', (_req, res) => {
  res.type('application/json').send(BODY);
});

const server = app.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ ready: true, port: server.address().port }));
});
server.keepAliveTimeout = 65_000;
