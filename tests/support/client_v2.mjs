// Official x402 v2 buyer: @x402/fetch pays the 402 by signing an EIP-3009 authorization.
//   node support/client_v2.mjs --url URL --key 0xKEY [--rpc RPC] [--asset 0xTOKEN] [--method GET] [--data BODY]
// → one JSON line {status, body, paymentResponse, headers} or {error} with exit code 1.
import { pathToFileURL } from 'node:url';
import { decodePaymentResponseHeader, wrapFetchWithPayment, x402Client } from '@x402/fetch';
import { ExactEvmScheme, toClientEvmSigner } from '@x402/evm';
import { createPublicClient, http } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { clientMain, headersObject } from './client_common.mjs';

// sent holds every PAYMENT-SIGNATURE the client produced, so callers can replay them
export async function payV2({ url, key, rpc, method = 'GET', body, network = 'eip155:84532', asset }) {
  const account = privateKeyToAccount(key);
  let publicClient;
  if (rpc) {
    const { anvilChain } = await import('./chain.mjs');
    publicClient = createPublicClient({ chain: anvilChain(rpc), transport: http(rpc) });
  }
  const client = x402Client.fromConfig({
    schemes: [{ network, client: new ExactEvmScheme(toClientEvmSigner(account, publicClient)) }],
    // the default controls only trust well-known token addresses; ours is deployed locally
    spendControls: { allowedAssets: asset ? [{ network, asset }] : true },
  });
  const sent = [];
  const recordingFetch = async (input, init) => {
    const req = new Request(input, init);
    const sig = req.headers.get('payment-signature');
    if (sig) sent.push(sig);
    return fetch(req);
  };
  const res = await wrapFetchWithPayment(recordingFetch, client)(url, { method, body });
  const text = await res.text();
  const header = res.headers.get('payment-response');
  return {
    status: res.status,
    body: text,
    paymentResponse: header ? decodePaymentResponseHeader(header) : null,
    headers: headersObject(res.headers),
    sent,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  await clientMain(async (args) => {
    const { sent, ...out } = await payV2({ url: args.url, key: args.key, rpc: args.rpc, method: args.method, body: args.data, asset: args.asset });
    return out;
  });
}
