// The API behind the gateway. It echoes what it received so tests can see exactly what the
// gateway forwarded, and counts hits so tests can prove a refused payment never reached it.
//   node support/upstream.mjs --port 0   → {"ready":true,"port":N}
// Control: GET /__hits, POST /__reset, GET /__last. Special paths: /status/NNN, /sse, /slow.
import { createHash } from 'node:crypto';
import http from 'node:http';
import { pathToFileURL } from 'node:url';
import { exitWithParent, parseArgs, printReady, sendJson, sleep } from './util.mjs';

export function createUpstream() {
  let hits = 0;
  let last = null;

  return http.createServer(async (req, res) => {
    const path = req.url;
    const pathname = path.split('?')[0];

    if (pathname === '/__hits') return sendJson(res, 200, { hits });
    if (pathname === '/__reset' && req.method === 'POST') {
      hits = 0;
      last = null;
      return sendJson(res, 200, { hits });
    }
    if (pathname === '/__last') return sendJson(res, 200, last);

    hits++;
    // receivedAt lets tests order this request against facilitator calls (same machine clock)
    const seen = { method: req.method, path, headers: { ...req.headers }, bodyBytes: 0, receivedAt: Date.now() };
    last = seen;

    // bodies are hashed as they stream so large uploads never sit in memory
    const sha = createHash('sha256');
    for await (const chunk of req) {
      seen.bodyBytes += chunk.length;
      sha.update(chunk);
    }
    const echo = { ok: true, method: req.method, path, headers: seen.headers, bodyBytes: seen.bodyBytes, bodySha256: sha.digest('hex') };

    const status = /\/status\/(\d{3})(?:\/|$)/.exec(pathname);
    if (status) {
      const code = Number(status[1]);
      if (code === 204 || code === 304) {
        res.writeHead(code);
        return res.end();
      }
      return sendJson(res, code, { error: 'upstream failure' });
    }

    if (pathname.includes('/sse')) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      for (let i = 1; i <= 5; i++) {
        res.write(`id: ${i}\ndata: {"n":${i}}\n\n`);
        await sleep(50);
      }
      return res.end();
    }

    if (pathname.includes('/slow')) await sleep(1500);
    return sendJson(res, 200, echo);
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = parseArgs(process.argv.slice(2));
  const server = createUpstream();
  server.listen(Number(args.port ?? 0), '127.0.0.1', () => printReady({ ready: true, port: server.address().port }));
  exitWithParent();
}
