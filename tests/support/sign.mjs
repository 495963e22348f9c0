// Hand-made x402 payments, so tests can send exactly the (possibly tampered) payload they need
// instead of whatever an official client would produce.
import { randomBytes } from 'node:crypto';
import { toHex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';

const V1_CHAIN_IDS = { base: 8453, 'base-sepolia': 84532 };

const AUTH_TYPES = {
  TransferWithAuthorization: [
    { name: 'from', type: 'address' },
    { name: 'to', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'validAfter', type: 'uint256' },
    { name: 'validBefore', type: 'uint256' },
    { name: 'nonce', type: 'bytes32' },
  ],
};

export const b64json = (value) => Buffer.from(JSON.stringify(value)).toString('base64');
export const unb64json = (header) => JSON.parse(Buffer.from(header, 'base64').toString('utf8'));

const chainIdOf = (network) => (network.startsWith('eip155:') ? Number(network.slice(7)) : V1_CHAIN_IDS[network]);

// `auth` overrides fields of the signed authorization (to, value, validBefore, ...).
export async function signAuthorization(key, requirements, auth = {}) {
  const account = privateKeyToAccount(key);
  const now = Math.floor(Date.now() / 1000);
  const authorization = {
    from: account.address,
    to: requirements.payTo,
    value: String(requirements.amount ?? requirements.maxAmountRequired),
    validAfter: String(now - 600),
    validBefore: String(now + (requirements.maxTimeoutSeconds ?? 60)),
    nonce: toHex(randomBytes(32)),
    ...auth,
  };
  const signature = await account.signTypedData({
    domain: {
      name: requirements.extra.name,
      version: requirements.extra.version,
      chainId: chainIdOf(requirements.network),
      verifyingContract: requirements.asset,
    },
    types: AUTH_TYPES,
    primaryType: 'TransferWithAuthorization',
    message: {
      ...authorization,
      value: BigInt(authorization.value),
      validAfter: BigInt(authorization.validAfter),
      validBefore: BigInt(authorization.validBefore),
    },
  });
  return { signature, authorization };
}

// v2 PaymentPayload for one entry of a PAYMENT-REQUIRED `accepts`; `accepted` overrides that copy.
export async function paymentV2(key, paymentRequired, { accepted = {}, auth = {}, index = 0 } = {}) {
  const chosen = { ...paymentRequired.accepts[index], ...accepted };
  const payload = await signAuthorization(key, chosen, auth);
  return { x402Version: 2, resource: paymentRequired.resource, accepted: chosen, payload };
}

// v1 PaymentPayload for one entry of a v1 402 body's `accepts`.
export async function paymentV1(key, requirements, { auth = {} } = {}) {
  const payload = await signAuthorization(key, requirements, auth);
  return { x402Version: 1, scheme: requirements.scheme, network: requirements.network, payload };
}
