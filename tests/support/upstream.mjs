// The API behind the gateway. It echoes what it received so tests can see exactly what the
// gateway forwarded, and counts hits so tests can prove a refused payment never reached it.
//   node support/upstream.mjs --port 0   → {"ready":true,"port":N}
// Control: GET /__hits, POST /__reset, GET /__last. Special paths: /status/NNN, /sse, /slow,
// /llm/json and /llm/stream (an OpenAI-style completion reporting `?tokens=N` in
// `usage.total_tokens`, as one JSON body or as chunks whose last event carries the usage;
// /llm/stream/cut drops the connection after the usage event).
// Any request may ask for response headers with `?h=Name:value` (repeatable), as a metered API
// reports usage (`Settlement-Overrides`, a usage or amount header).
// `--h2c` serves HTTP/2 with prior knowledge (no HTTP/1.1) instead; echoes say `httpVersion`.
import { createHash } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import { pathToFileURL } from 'node:url';
import { exitWithParent, parseArgs, printReady, sendJson, sleep } from './util.mjs';

export function createUpstream({ h2c = false } = {}) {
  let hits = 0;
  let last = null;

  const handler = async (req, res) => {
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
    const echo = { ok: true, method: req.method, path, httpVersion: req.httpVersion, headers: seen.headers, bodyBytes: seen.bodyBytes, bodySha256: sha.digest('hex') };

    for (const wanted of new URL(path, 'http://upstream').searchParams.getAll('h')) {
      const colon = wanted.indexOf(':');
      if (colon > 0) res.setHeader(wanted.slice(0, colon), wanted.slice(colon + 1));
    }

    const status = /\/status\/(\d{3})(?:\/|$)/.exec(pathname);
    if (status) {
      const code = Number(status[1]);
      if (code === 204 || code === 304) {
        res.writeHead(code);
        return res.end();
      }
      return sendJson(res, code, { error: 'upstream failure' });
    }

    const tokens = new URL(path, 'http://upstream').searchParams.get('tokens');
    const usage = tokens === null ? undefined : { prompt_tokens: 3, completion_tokens: Number(tokens) - 3, total_tokens: Number(tokens) };
    if (pathname.includes('/llm/json')) {
      return sendJson(res, 200, { id: 'cmpl-1', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: 'hello' } }], usage, echo: { bodySha256: echo.bodySha256, headers: echo.headers } });
    }
    if (pathname.includes('/llm/stream')) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      for (const word of ['hel', 'lo', '!']) {
        res.write(`data: ${JSON.stringify({ id: 'cmpl-1', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: word } }] })}\n\n`);
        await sleep(30);
      }
      // OpenAI's `stream_options.include_usage`: a last chunk with no choices and the usage
      res.write(`data: ${JSON.stringify({ id: 'cmpl-1', object: 'chat.completion.chunk', choices: [], usage })}\n\n`);
      if (pathname.includes('/cut')) {
        // the connection drops after the usage, before the stream's proper end
        await sleep(30);
        return res.socket.destroy();
      }
      res.write('data: [DONE]\n\n');
      return res.end();
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
  };
  return h2c ? http2.createServer(handler) : http.createServer(handler);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = parseArgs(process.argv.slice(2));
  const server = createUpstream({ h2c: args.h2c === true });
  server.listen(Number(args.port ?? 0), '127.0.0.1', () => printReady({ ready: true, port: server.address().port }));
  exitWithParent();
}
