// Shared command-line plumbing of the two buyer clients.
import { parseArgs } from './util.mjs';

export function headersObject(headers) {
  const out = {};
  headers.forEach((value, name) => {
    out[name] = value;
  });
  return out;
}

// One JSON line on stdout either way, so a parent process never has to parse logs.
export async function clientMain(run) {
  const args = parseArgs(process.argv.slice(2));
  try {
    if (!args.url || !args.key) throw new Error('usage: --url URL --key 0xPRIVATEKEY [--rpc RPC] [--method GET] [--data BODY]');
    process.stdout.write(`${JSON.stringify(await run(args))}\n`);
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ error: err?.message ?? String(err) })}\n`);
    process.exitCode = 1;
  }
}
