// On-chain settlement for the vendor facilitator emulators: what the real services do with a
// verified `exact` payment, against the local chain of chain.mjs.
import { createPublicClient, createWalletClient, http, parseSignature } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { anvilChain, tokenAbi } from './chain.mjs';

// Submits an EIP-3009 authorization to the chain; resolves to the mined transaction hash.
export function chainSettler({ rpc, signer, chainId }) {
  const chain = anvilChain(rpc, chainId);
  const account = privateKeyToAccount(signer);
  const wallet = createWalletClient({ account, chain, transport: http(rpc) });
  const reader = createPublicClient({ chain, transport: http(rpc), cacheTime: 0, pollingInterval: 100 });
  return async (payload, requirements) => {
    const { authorization: a, signature } = payload.payload;
    const { r, s, v, yParity } = parseSignature(signature);
    const hash = await wallet.writeContract({
      address: requirements.asset,
      abi: tokenAbi,
      functionName: 'transferWithAuthorization',
      args: [a.from, a.to, BigInt(a.value), BigInt(a.validAfter), BigInt(a.validBefore), a.nonce, Number(v ?? 27n + BigInt(yParity)), r, s],
    });
    const receipt = await reader.waitForTransactionReceipt({ hash });
    if (receipt.status !== 'success') throw new Error(`transaction ${hash} reverted`);
    return hash;
  };
}

