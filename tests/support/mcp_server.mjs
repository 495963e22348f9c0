// A real MCP server (the official @modelcontextprotocol/sdk) over Streamable HTTP, with a few
// tools, a resource and a prompt. It counts executions so tests can prove an unpaid call never ran.
//   node support/mcp_server.mjs --port 0   → {"ready":true,"port":N}
// Endpoints: POST|GET|DELETE /mcp (JSON responses), /mcp-sse (SSE-streamed responses), /mcp-moved
// (the same JSON responses, body and all, sent with HTTP status 302: a server answering a redirect).
// Control: GET /__executions ({tool: count}), GET /__hits (requests), GET /__last (the last JSON-RPC body received,
// with its headers), POST /__reset.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';
import { exitWithParent, parseArgs, printReady, readBody, sendJson } from './util.mjs';

const args = parseArgs(process.argv.slice(2));
let executions = {};
let last = null;
let hits = 0;

const ran = (name) => {
  executions[name] = (executions[name] ?? 0) + 1;
};

function buildServer() {
  const server = new McpServer(
    { name: 'x402-gateway-test-tools', version: '1.0.0' },
    { capabilities: { logging: {} } },
  );
  server.registerTool(
    'search',
    { description: 'A priced search', inputSchema: { q: z.string() } },
    async ({ q }, extra) => {
      ran('search');
      // A notification on the request's own stream, before its result (SSE responses only).
      await extra.sendNotification({
        method: 'notifications/message',
        params: { level: 'info', data: `searching for ${q}` },
      });
      return {
        content: [{ type: 'text', text: `secret results for ${q}` }],
        structuredContent: { hits: [q, `${q}!`] },
      };
    },
  );
  server.registerTool(
    'premium',
    { description: 'A dearer tool', inputSchema: { q: z.string() } },
    async ({ q }) => {
      ran('premium');
      return { content: [{ type: 'text', text: `premium secret for ${q}` }] };
    },
  );
  server.registerTool('echo', { description: 'Free', inputSchema: { text: z.string() } }, async ({ text }) => {
    ran('echo');
    return { content: [{ type: 'text', text }] };
  });
  server.registerTool('broken', { description: 'Priced, always fails' }, async () => {
    ran('broken');
    return { isError: true, content: [{ type: 'text', text: 'the tool failed' }] };
  });
  server.registerResource('report', 'report://daily', { description: 'A priced resource' }, async (uri) => {
    ran('report');
    return { contents: [{ uri: uri.href, text: 'secret daily report' }] };
  });
  server.registerPrompt('advice', { description: 'A priced prompt' }, async () => {
    ran('advice');
    return { messages: [{ role: 'user', content: { type: 'text', text: 'secret advice' } }] };
  });
  return server;
}

// One transport (and server) per MCP session, as the SDK's stateful examples do.
const sessions = new Map();

async function handleMcp(req, res, json) {
  const sessionId = req.headers['mcp-session-id'];
  let transport = sessionId ? sessions.get(sessionId) : undefined;
  let body;
  if (req.method === 'POST') {
    const raw = await readBody(req);
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      return sendJson(res, 400, { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } });
    }
    last = { body, headers: { ...req.headers }, bytes: raw.length };
  }
  if (!transport) {
    if (sessionId) return sendJson(res, 404, { jsonrpc: '2.0', id: null, error: { code: -32001, message: 'unknown session' } });
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: json,
      onsessioninitialized: (id) => sessions.set(id, transport),
    });
    transport.onclose = () => {
      if (transport.sessionId) sessions.delete(transport.sessionId);
    };
    await buildServer().connect(transport);
  }
  await transport.handleRequest(req, res, body);
}

const server = http.createServer(async (req, res) => {
  const path = req.url.split('?')[0];
  try {
    if (path === '/__executions') return sendJson(res, 200, executions);
    if (path === '/__hits') return sendJson(res, 200, { hits });
    if (path === '/__last') return sendJson(res, 200, last);
    if (path === '/__reset' && req.method === 'POST') {
      executions = {};
      last = null;
      hits = 0;
      return sendJson(res, 200, {});
    }
    hits++;
    if (path === '/mcp' || path === '/mcp-both') return await handleMcp(req, res, true);
    if (path === '/mcp-sse') return await handleMcp(req, res, false);
    if (path === '/mcp-moved') {
      // The SDK writes 200; the answer goes out as a 302 with the same headers and body.
      const writeHead = res.writeHead.bind(res);
      res.writeHead = (status, ...rest) => writeHead(status === 200 ? 302 : status, ...rest);
      return await handleMcp(req, res, true);
    }
    sendJson(res, 404, { error: 'not found' });
  } catch (e) {
    if (!res.headersSent) sendJson(res, 500, { error: String(e) });
  }
});

server.listen(Number(args.port ?? 0), '127.0.0.1', () => {
  printReady({ ready: true, port: server.address().port });
});
exitWithParent(() => server.close());
