// Official x402 v1 buyer: the legacy x402-fetch client, which reads the 402 JSON body.
//   node support/client_v1.mjs --url URL --key 0xKEY [--method GET] [--data BODY]
// → one JSON line {status, body, paymentResponse, headers} or {error} with exit code 1.
import { pathToFileURL } from 'node:url';
import { createSigner, decodeXPaymentResponse, wrapFetchWithPayment } from 'x402-fetch';
import { clientMain, headersObject } from './client_common.mjs';

export async function payV1({ url, key, method = 'GET', body, network = 'base-sepolia' }) {
  // signing is offline: the legacy signer needs no RPC for an EIP-3009 authorization
  const signer = await createSigner(network, key);
  const sent = [];
  const recordingFetch = async (input, init) => {
    const req = new Request(input, init);
    const sig = req.headers.get('x-payment');
    if (sig) sent.push(sig);
    return fetch(req);
  };
  const res = await wrapFetchWithPayment(recordingFetch, signer)(url, { method, body });
  const text = await res.text();
  const header = res.headers.get('x-payment-response');
  return {
    status: res.status,
    body: text,
    paymentResponse: header ? decodeXPaymentResponse(header) : null,
    headers: headersObject(res.headers),
    sent,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  await clientMain(async (args) => {
    const { sent, ...out } = await payV1({ url: args.url, key: args.key, method: args.method, body: args.data });
    return out;
  });
}
