// One complete x402 deployment per test file: anvil + FiatTokenV2_2, the official facilitator,
// the echo upstream, and the gateway binary under test in front of the upstream.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { createPublicClient, http, parseEventLogs } from 'viem';
import { anvilChain, tokenAbi } from '../support/chain.mjs';
import { startProcess, startReady } from '../support/proc.mjs';
import { freePort, sleep } from '../support/util.mjs';

export const PRICE = 10000n;
export const GATEWAY_BIN = process.env.GATEWAY_BIN || fileURLToPath(new URL('../../target/debug/x402-gateway', import.meta.url));

function gatewayConfig({ port, adminPort, upstreamPort, facilitatorPort, payTo, token, routes = '', publicUrl = false, admin = '', config = '' }) {
  return `unmatched = "proxy"
[server]
listen = "127.0.0.1:${port}"${publicUrl ? `\npublic_url = "${typeof publicUrl === 'string' ? publicUrl : `http://127.0.0.1:${port}`}"` : ''}
[admin]
listen = "127.0.0.1:${adminPort}"
${admin}
[upstream]
url = "http://127.0.0.1:${upstreamPort}"
[facilitator]
kind = "x402"
url = "http://127.0.0.1:${facilitatorPort}"
timeout = "10s"
[defaults]
network = "eip155:84532"
pay_to = "${payTo}"
asset = "USDC"
max_timeout_seconds = 120
[assets."eip155:84532".USDC]
address = "${token}"
decimals = 6
name = "USDC"
version = "2"
[[routes]]
match = "GET /paid"
price = "$0.01"
description = "paid data"
mime_type = "application/json"
[[routes]]
match = "GET /paid/status/500"
price = "$0.01"
[[routes]]
match = "GET /before"
price = "$0.01"
settle = "before"
[[routes]]
match = "* /mcp"
mcp = true
[[routes.tools]]
name = "search"
price = "$0.01"
description = "a paid MCP tool"
${routes}
${config}`;
}

async function waitForTcp(port, proc, log, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`gateway exited with ${proc.child.exitCode}:\n${log()}`);
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.end(() => resolve(true)));
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`gateway not listening on ${port} after ${timeoutMs} ms:\n${log()}`);
    await sleep(100);
  }
}

async function startGateway(cfg) {
  if (!existsSync(GATEWAY_BIN)) throw new Error(`gateway binary not found at ${GATEWAY_BIN} (set GATEWAY_BIN)`);
  const dir = mkdtempSync(join(tmpdir(), 'x402-e2e-'));
  const file = join(dir, 'gateway.toml');
  writeFileSync(file, gatewayConfig(cfg));
  const proc = startProcess(GATEWAY_BIN, ['run', '--config', file], { env: { RUST_LOG: process.env.RUST_LOG || 'info' } });
  let out = '';
  proc.child.stdout.setEncoding('utf8');
  proc.child.stdout.on('data', (d) => {
    out = (out + d).slice(-20000);
  });
  const log = () => `${out}${proc.stderr()}`.slice(-6000);
  await waitForTcp(cfg.port, proc, log);
  return { proc, log, configFile: file };
}

// `upstream` is the support script serving behind the gateway (the echo API, or an MCP server).
// `upto: true` also installs Permit2 and the upto proxy on the chain and registers the official
// `upto` scheme in the facilitator; the rig then carries `upto: {permit2, uptoProxy, gas}`.
// `batch: true` also installs the batch-settlement escrow and its EIP-3009 collector and registers
// the official `batch-settlement` scheme, with a receiver authorizer, in the facilitator; the rig
// then carries `batch: {settlement, erc3009Collector, authorizerKey, gas, compile}`.
// `gateway: false` leaves the gateway out, for tests of the rig's own parts (no binary needed).
// `routes` is TOML appended to the gateway's configuration (more `[[routes]]`), `config` TOML
// appended after them (other tables, e.g. `[journal]`), `admin` keys of its `[admin]`; `publicUrl`
// sets `[server] public_url` to the gateway's own address. `replicas: N` starts N gateways on one
// configuration with `[redis]` (the machine's Redis, a key prefix of this rig's own), as replicas
// behind one name are run; `rig.url(path, i)` addresses replica i.
export async function startRig({ upstream: upstreamScript = 'upstream.mjs', upto = false, batch = false, gateway: withGateway = true, routes = '', publicUrl = false, replicas = 1, admin = '', config = '' } = {}) {
  const procs = [];
  const stop = () => Promise.all(procs.reverse().map((p) => p.stop()));
  try {
    const chainArgs = ['--port', '0', ...(upto ? ['--upto'] : []), ...(batch ? ['--batch'] : [])];
    const chain = await startReady('chain.mjs', chainArgs, { timeoutMs: upto || batch ? 90000 : 30000 });
    procs.push(chain);
    const info = chain.info;
    const facilitatorArgs = ['--port', '0', '--rpc', info.rpc, '--key', info.facilitatorKey, ...(upto ? ['--upto'] : [])];
    if (batch) facilitatorArgs.push('--batch-authorizer-key', info.batch.authorizerKey);
    const [facilitator, upstream] = await Promise.all([
      startReady('facilitator.mjs', facilitatorArgs),
      startReady(upstreamScript, ['--port', '0']),
    ]);
    procs.push(facilitator, upstream);
    let port = null;
    let gateway = null;
    let firstAdminPort = null;
    const ports = [];
    if (withGateway) {
      const shared = replicas > 1
        ? `\n[redis]\nurl = "${process.env.REDIS_URL || 'redis://127.0.0.1:6379'}"\nkey_prefix = "e2e-${process.pid}-${Date.now()}:"\n`
        : '';
      for (let i = 0; i < replicas; i++) {
        ports.push(await freePort());
      }
      // Replicas serve one public name: the first replica's address.
      const publicName = publicUrl ? `http://127.0.0.1:${ports[0]}` : false;
      for (let i = 0; i < replicas; i++) {
        const replicaPort = ports[i];
        const adminPort = await freePort();
        const started = await startGateway({ port: replicaPort, adminPort, upstreamPort: upstream.info.port, facilitatorPort: facilitator.info.port, payTo: info.payTo, token: info.token, routes: routes + shared, publicUrl: publicName, admin, config });
        procs.push(started.proc);
        if (i === 0) {
          port = replicaPort;
          gateway = started;
          firstAdminPort = adminPort;
        }
      }
    }
    // Stops the first gateway and starts it again on the same configuration and port (what a
    // restart or a redeploy does), for tests of what survives one.
    // `amend` rewrites the configuration's text in between.
    const restartGateway = async (amend = (text) => text) => {
      if (!gateway) throw new Error('this rig was started with gateway: false');
      await gateway.proc.stop();
      writeFileSync(gateway.configFile, amend(readFileSync(gateway.configFile, 'utf8')));
      const proc = startProcess(GATEWAY_BIN, ['run', '--config', gateway.configFile], { env: { RUST_LOG: process.env.RUST_LOG || 'info' } });
      proc.child.stdout?.resume();
      procs.push(proc);
      gateway.proc = proc;
      gateway.log = () => proc.stderr().slice(-6000);
      await waitForTcp(port, proc, gateway.log);
    };
    return makeRig({ info, port, ports, adminPort: firstAdminPort, facilitatorPort: facilitator.info.port, upstreamPort: upstream.info.port, gateway, stop, restartGateway });
  } catch (err) {
    await stop();
    throw err;
  }
}

function makeRig({ info, port, ports = [port], adminPort = null, facilitatorPort, upstreamPort, gateway, stop, restartGateway }) {
  // viem caches the block number for 4 s by default, which hides blocks mined in between
  const publicClient = createPublicClient({ chain: anvilChain(info.rpc), transport: http(info.rpc), cacheTime: 0, pollingInterval: 100 });
  const facUrl = `http://127.0.0.1:${facilitatorPort}`;
  const upUrl = `http://127.0.0.1:${upstreamPort}`;
  const getJson = (url, init) => fetch(url, init).then((r) => r.json());

  return {
    ...info,
    publicClient,
    stop,
    gatewayLog: gateway ? () => gateway.log() : () => '(no gateway in this rig)',
    restartGateway,
    gatewayConfigFile: gateway ? gateway.configFile : null,
    authority: gateway ? `127.0.0.1:${port}` : null,
    upstreamAuthority: `127.0.0.1:${upstreamPort}`,
    url: (path, replica = 0) => {
      if (!gateway) throw new Error('this rig was started with gateway: false');
      if (replica >= ports.length) throw new Error(`this rig runs ${ports.length} gateway(s), not replica ${replica}`);
      return `http://127.0.0.1:${ports[replica]}${path}`;
    },
    facilitatorUrl: facUrl,
    // The first gateway's admin listener (health, metrics, the admin API and the console).
    adminUrl: (path) => {
      if (!adminPort) throw new Error('this rig was started with gateway: false');
      return `http://127.0.0.1:${adminPort}${path}`;
    },

    hits: async () => (await getJson(`${upUrl}/__hits`)).hits,
    lastUpstream: () => getJson(`${upUrl}/__last`),
    facCalls: () => getJson(`${facUrl}/__calls`),
    facTimes: () => getJson(`${facUrl}/__times`),
    facLast: (endpoint) => getJson(`${facUrl}/__last/${endpoint}`),
    facPost: (endpoint, body) =>
      getJson(`${facUrl}/${endpoint}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),

    balance: (address) => publicClient.readContract({ address: info.token, abi: tokenAbi, functionName: 'balanceOf', args: [address] }),
    blockNumber: () => publicClient.getBlockNumber(),
    // token Transfer events from `from` since a block: proves what did (not) move on chain
    transfersFrom: async (from, fromBlock) => {
      if (fromBlock > (await publicClient.getBlockNumber())) return []; // anvil rejects ranges past the head
      const logs = await publicClient.getContractEvents({ address: info.token, abi: tokenAbi, eventName: 'Transfer', args: { from }, fromBlock });
      return logs.map((l) => l.args);
    },
    // the token Transfer events of one mined transaction
    transfersIn: async (hash) => {
      const receipt = await publicClient.getTransactionReceipt({ hash });
      const logs = parseEventLogs({ abi: tokenAbi, logs: receipt.logs, eventName: 'Transfer' });
      return { receipt, transfers: logs.filter((l) => l.address.toLowerCase() === info.token.toLowerCase()).map((l) => l.args) };
    },
  };
}

// Starts a rig before the file's tests and stops it after; the getter is valid inside tests.
export function useRig(options) {
  let rig;
  before(async () => {
    rig = await startRig(options);
  }, { timeout: options?.upto || options?.batch ? 120000 : 60000 });
  after(() => rig?.stop(), { timeout: 15000 });
  return () => rig;
}

export const decodeB64Json = (header) => JSON.parse(Buffer.from(header, 'base64').toString('utf8'));

// The unpaid 402 of a route: v2 PaymentRequired from the header and the v1 JSON body.
export async function challenge(rig, path) {
  const res = await fetch(rig.url(path));
  const header = res.headers.get('payment-required');
  const text = await res.text();
  let v1 = null;
  try {
    v1 = JSON.parse(text);
  } catch {
    // left null: the test asserting on the body reports it
  }
  return { status: res.status, v2: header ? decodeB64Json(header) : null, v1, text };
}

// Where things stand before a request, to compare with after it.
export async function snapshot(rig, buyer) {
  const [hits, balance, block, calls] = await Promise.all([rig.hits(), rig.balance(buyer.address), rig.blockNumber(), rig.facCalls()]);
  return { hits, balance, block, calls };
}

// A refused payment: upstream untouched, buyer not charged, no Transfer from the buyer on chain.
export async function assertNothingCharged(rig, before, buyer, { upstreamHits = 0 } = {}) {
  assert.equal(await rig.hits(), before.hits + upstreamHits, 'upstream hits');
  assert.equal(await rig.balance(buyer.address), before.balance, 'buyer balance unchanged');
  assert.deepEqual(await rig.transfersFrom(buyer.address, before.block + 1n), [], 'no Transfer from the buyer');
}

// A successful payment: the settle response names a mined tx carrying exactly buyer → payTo PRICE.
export async function assertPaidOnChain(rig, paymentResponse, buyer, network = 'eip155:84532') {
  assert.ok(paymentResponse, 'payment response header present');
  assert.equal(paymentResponse.success, true, JSON.stringify(paymentResponse));
  assert.equal(paymentResponse.network, network);
  assert.equal(paymentResponse.payer?.toLowerCase(), buyer.address.toLowerCase());
  assert.match(paymentResponse.transaction, /^0x[0-9a-fA-F]{64}$/);
  const { receipt, transfers } = await rig.transfersIn(paymentResponse.transaction);
  assert.equal(receipt.status, 'success');
  assert.deepEqual(transfers, [{ from: buyer.address, to: rig.payTo, value: PRICE }]);
  return receipt;
}
