// Small shared pieces for the support processes (no dependencies).
import { fstatSync } from 'node:fs';
import net from 'node:net';

// `--port 0 --rpc URL --flag` → { port: '0', rpc: 'URL', flag: true }
export function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    if (eq > 0) {
      out[a.slice(2, eq)] = a.slice(eq + 1);
    } else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) {
      out[a.slice(2)] = argv[++i];
    } else {
      out[a.slice(2)] = true;
    }
  }
  return out;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// The parent reads exactly one JSON line from stdout to learn where we listen.
export function printReady(info) {
  process.stdout.write(`${JSON.stringify(info)}\n`);
}

export async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks);
}

export function sendJson(res, status, value) {
  const body = JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// When a parent spawned us with a stdin pipe, that pipe closing means the parent is gone:
// exit rather than linger as an orphan. A terminal or /dev/null stdin is left alone.
export function exitWithParent(cleanup = () => {}) {
  const exit = () => {
    cleanup();
    process.exit(0);
  };
  process.on('SIGTERM', exit);
  process.on('SIGINT', exit);
  const stdin = fstatSync(0);
  if (stdin.isFIFO() || stdin.isSocket()) {
    process.stdin.on('end', exit);
    process.stdin.on('error', exit);
    process.stdin.resume();
  }
}
