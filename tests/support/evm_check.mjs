// What a vendor facilitator checks before it accepts a payment, done for real with viem:
// the EIP-712 TransferWithAuthorization signature (by `from` for `exact`, by the session key
// named in `accepted.extra.sessionCert` for `aggr_deferred`), recipient, amount, time window,
// and nonce reuse. Shared by the OKX and AgentWallex emulators.
import { recoverTypedDataAddress } from 'viem';

export const AUTH_TYPES = {
  TransferWithAuthorization: [
    { name: 'from', type: 'address' },
    { name: 'to', type: 'address' },
    { name: 'value', type: 'uint256' },
    { name: 'validAfter', type: 'uint256' },
    { name: 'validBefore', type: 'uint256' },
    { name: 'nonce', type: 'bytes32' },
  ],
};

const lower = (s) => String(s ?? '').toLowerCase();

// A session certificate as the emulated TEE issues it: base64 JSON binding a session key to an
// account. The real one is opaque to sellers; only the facilitator reads it.
export function readSessionCert(cert) {
  try {
    const parsed = JSON.parse(Buffer.from(String(cert), 'base64').toString('utf8'));
    if (parsed?.sessionKey && parsed?.account) return parsed;
  } catch {
    // unreadable
  }
  return null;
}

export function createChecker() {
  const used = new Set();

  // `payload` is a v2 PaymentPayload; `req` v2 requirements ({scheme, network, amount, asset, payTo, extra}).
  async function check(payload, req) {
    const auth = payload?.payload?.authorization;
    const signature = payload?.payload?.signature;
    const payer = auth?.from ?? '';
    const fail = (invalidReason, invalidMessage = invalidReason) => ({ isValid: false, invalidReason, invalidMessage, payer });
    if (!auth || !signature || !req) return fail('invalid_payload');
    const accepted = payload.accepted ?? {};
    if (req.scheme !== 'exact' && req.scheme !== 'aggr_deferred') return fail('unsupported_scheme');
    if (accepted.scheme !== undefined && accepted.scheme !== req.scheme) return fail('param_mismatch', 'scheme mismatch');
    if (accepted.amount !== undefined && String(accepted.amount) !== String(req.amount)) return fail('amount mismatch');
    if (!req.extra?.name || !req.extra?.version) return fail('param_mismatch', 'missing EIP-712 domain');
    if (!String(req.network).startsWith('eip155:')) return fail('unsupported_chain');
    const chainId = Number(String(req.network).slice(7));

    let expectedSigner = auth.from;
    if (req.scheme === 'aggr_deferred') {
      if (req.extra.sessionCert !== undefined) return fail('param_mismatch', 'sessionCert must not be in paymentRequirements');
      const cert = readSessionCert(accepted.extra?.sessionCert);
      if (!cert) return fail('invalid_payload', 'missing or unreadable accepted.extra.sessionCert');
      if (lower(cert.account) !== lower(auth.from)) return fail('invalid_signature', 'session certificate is for another account');
      expectedSigner = cert.sessionKey;
    }

    let signer = '';
    try {
      signer = await recoverTypedDataAddress({
        domain: { name: req.extra.name, version: req.extra.version, chainId, verifyingContract: req.asset },
        types: AUTH_TYPES,
        primaryType: 'TransferWithAuthorization',
        message: {
          ...auth,
          value: BigInt(auth.value),
          validAfter: BigInt(auth.validAfter),
          validBefore: BigInt(auth.validBefore),
        },
        signature,
      });
    } catch {
      return fail('invalid_signature');
    }
    if (lower(signer) !== lower(expectedSigner)) return fail('invalid_signature');
    if (lower(auth.to) !== lower(req.payTo)) return fail('toAddr mismatch');
    if (BigInt(auth.value) !== BigInt(req.amount)) return fail('amount mismatch');
    const now = BigInt(Math.floor(Date.now() / 1000));
    if (BigInt(auth.validAfter) > now) return fail('not_yet_valid');
    if (BigInt(auth.validBefore) <= now) return fail('expired');
    const key = `${chainId}:${lower(req.asset)}:${lower(auth.from)}:${lower(auth.nonce)}`;
    if (used.has(key)) return fail('nonce_used');
    return { isValid: true, payer, key };
  }

  return {
    check,
    // no await between the check and this insert, so concurrent settles cannot both pass
    markUsed: (key) => used.add(key),
  };
}
