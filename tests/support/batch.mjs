// The contracts of the x402 `batch-settlement` scheme on the local chain, at the addresses
// @x402/evm 2.27.0 hard-codes:
// - the project's own escrow (contracts/X402BatchSettlement.sol) at 0x4020074e…0003, and
// - its EIP-3009 deposit collector (contracts/ERC3009DepositCollector.sol) at 0x40208060…0004,
// each deployed normally and its runtime code copied there with anvil_setCode. The escrow has no
// immutable that names its own address (its EIP-712 domain is hashed with the current address when
// that is not the deployment address), and the collector's one immutable is the canonical escrow
// address it was constructed with, so both behave at the canonical addresses as if deployed there.
// - Multicall3's `tryAggregate` at Multicall3's address: the official batch facilitator reads the
//   channel state through it on every verify and after every deposit.
// The Permit2 deposit collector is not installed: the official client defaults to EIP-3009, which
// FiatTokenV2_2 supports, and the rig's routes do not announce `assetTransferMethod: "permit2"`.
// Both contracts import OpenZeppelin 5.7.0; the sources of their import closure are read from
// node_modules and given to solc up front. Output is cached like the upto contracts (upto.mjs).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getAddress } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { x402Client } from '@x402/core/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import { toClientEvmSigner } from '@x402/evm';
import { BatchSettlementEvmScheme } from '@x402/evm/batch-settlement/client';
import { MULTICALL3_ADDRESS, compile, compileMulticall, placeAt } from './upto.mjs';

const require = createRequire(import.meta.url);

export const BATCH_SETTLEMENT_ADDRESS = '0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003';
export const ERC3009_DEPOSIT_COLLECTOR_ADDRESS = '0x4020806089470a89826cB9fB1f4059150b550004';
export { MULTICALL3_ADDRESS };

const OZ_ROOT = dirname(require.resolve('@openzeppelin/contracts/package.json'));
const CONTRACTS_DIR = fileURLToPath(new URL('../contracts/', import.meta.url));
const IMPORT_RE = /^\s*import\s+(?:[^'"]*?\s+from\s+)?["']([^"']+)["']\s*;/gm;

function readUnit(unit) {
  if (unit.startsWith('@openzeppelin/contracts/')) return readFileSync(join(OZ_ROOT, unit.slice('@openzeppelin/contracts/'.length)), 'utf8');
  return readFileSync(join(CONTRACTS_DIR, unit), 'utf8');
}

// The file plus every source it imports, transitively, under the unit names solc resolves them to.
function importClosure(file) {
  const sources = {};
  const pending = [file];
  while (pending.length) {
    const unit = pending.pop();
    if (sources[unit]) continue;
    const content = readUnit(unit);
    sources[unit] = { content };
    for (const [, path] of content.matchAll(IMPORT_RE)) {
      pending.push(path.startsWith('.') ? posix.normalize(posix.join(posix.dirname(unit), path)) : path);
    }
  }
  return sources;
}

// Cancun for EIP-1153 (ReentrancyGuardTransient's TSTORE/TLOAD); anvil 1.7.1 runs a later fork.
function batchInput(file, name) {
  return {
    language: 'Solidity',
    sources: importClosure(file),
    settings: {
      evmVersion: 'cancun',
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { [file]: { [name]: ['abi', 'evm.bytecode.object'] } },
    },
  };
}

export function compileBatchSettlement() {
  return compile('solc-0828', batchInput('X402BatchSettlement.sol', 'x402BatchSettlement'), 'X402BatchSettlement.sol', 'x402BatchSettlement');
}

export function compileErc3009Collector() {
  return compile('solc-0828', batchInput('ERC3009DepositCollector.sol', 'ERC3009DepositCollector'), 'ERC3009DepositCollector.sol', 'ERC3009DepositCollector');
}

// Puts the escrow, its EIP-3009 collector and (if absent) Multicall3 at their canonical addresses,
// given viem clients for an anvil chain (the wallet's account funded). Both contracts are always
// (re)placed. Returns the addresses, the deployment gas and the compile times.
export async function installBatchSettlement({ publicClient, wallet }) {
  const settlementBuild = compileBatchSettlement();
  const collectorBuild = compileErc3009Collector();
  const gas = { settlement: 0n, collector: 0n, multicall: 0n };

  gas.settlement = await placeAt(publicClient, wallet, BATCH_SETTLEMENT_ADDRESS, settlementBuild, [], 'batch settlement');
  gas.collector = await placeAt(publicClient, wallet, ERC3009_DEPOSIT_COLLECTOR_ADDRESS, collectorBuild, [BATCH_SETTLEMENT_ADDRESS], 'EIP-3009 deposit collector');
  const bound = await publicClient.readContract({ address: ERC3009_DEPOSIT_COLLECTOR_ADDRESS, abi: collectorBuild.abi, functionName: 'x402BatchSettlement' });
  if (bound !== getAddress(BATCH_SETTLEMENT_ADDRESS)) throw new Error(`collector at ${ERC3009_DEPOSIT_COLLECTOR_ADDRESS} serves ${bound}`);

  // the escrow's domain must name the canonical address, or every channel id would differ from the client's
  const [, name, version, chainId, verifyingContract] = await publicClient.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: settlementBuild.abi, functionName: 'eip712Domain' });
  if (name !== 'x402 Batch Settlement' || version !== '1' || Number(chainId) !== (await publicClient.getChainId()) || verifyingContract !== getAddress(BATCH_SETTLEMENT_ADDRESS)) {
    throw new Error(`escrow EIP-712 domain is ${JSON.stringify({ name, version, chainId: String(chainId), verifyingContract })}`);
  }

  if (!(await publicClient.getCode({ address: MULTICALL3_ADDRESS }))) {
    gas.multicall = await placeAt(publicClient, wallet, MULTICALL3_ADDRESS, compileMulticall(), [], 'Multicall3');
  }

  return {
    settlement: getAddress(BATCH_SETTLEMENT_ADDRESS),
    erc3009Collector: getAddress(ERC3009_DEPOSIT_COLLECTOR_ADDRESS),
    gas,
    compile: {
      settlement: { ms: settlementBuild.ms, cached: settlementBuild.cached },
      collector: { ms: collectorBuild.ms, cached: collectorBuild.cached },
    },
  };
}

// The official batch-settlement buyer on the rig's chain: the client scheme of @x402/evm (with its
// in-memory channel store and the chain to recover channels from), registered on an x402Client
// that may pay the rig's token, behind @x402/fetch (which probes unpaid, pays the 402 and retries
// once after a corrective 402). `fetchImpl` sees every request the buyer sends.
export function officialBatchBuyer(r, buyer, fetchImpl = fetch) {
  const scheme = new BatchSettlementEvmScheme(toClientEvmSigner(privateKeyToAccount(buyer.key), r.publicClient));
  const client = x402Client.fromConfig({
    schemes: [{ network: 'eip155:84532', client: scheme }],
    // the default controls only trust x402's built-in tokens; ours is deployed locally
    spendControls: { allowedAssets: [{ network: 'eip155:84532', asset: r.token }] },
  });
  return { scheme, client, paidFetch: wrapFetchWithPayment(fetchImpl, client) };
}
