// The contracts of the x402 `upto` scheme on the local chain, at the addresses @x402/evm hard-codes:
// - Uniswap Permit2, compiled from @uniswap/v4-periphery's copy of its sources with the exact
//   compiler and settings of the canonical deployment, and deployed through anvil's CREATE2 deployer
//   with the canonical salt, so it lands at the canonical address byte for byte. (Copying code there
//   with anvil_setCode is not enough: Permit2 caches an EIP-712 domain separator hashed with the
//   address it was constructed at, and signatures would then verify off chain but fail on chain.)
// - the project's own upto proxy (contracts/X402UptoPermit2Proxy.sol), deployed normally and its
//   runtime code copied to the canonical proxy address (its only immutable is the Permit2 address).
// - Multicall3's `tryAggregate` (contracts/Multicall3TryAggregate.sol) at Multicall3's address: the
//   official facilitator reads why a Permit2 simulation failed through it, as it can on real chains.
// Compiler output is cached under node_modules/.cache, keyed by compiler version and the whole
// standard-JSON input, because compiling Permit2 via IR takes several seconds per test file.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { concat, domainSeparator, getAddress, getContractAddress, keccak256, parseAbi, size } from 'viem';

const require = createRequire(import.meta.url);

export const PERMIT2_ADDRESS = '0x000000000022D473030F116dDEE9F6B43aC78BA3';
export const UPTO_PROXY_ADDRESS = '0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002';
// anvil's built-in deterministic deployer (Arachnid's): calldata is salt ‖ init code
export const CREATE2_DEPLOYER = '0x4e59b44847b379578588920ca78fbf26c0b4956c';
export const PERMIT2_SALT = '0x0000000000000000000000000000000000000000d3af2663da51c10215000000';
// keccak256 of the canonical Permit2 init code; any other value cannot land at PERMIT2_ADDRESS
export const PERMIT2_INIT_CODE_HASH = '0xe2be1e05eedf35dacd66c65c862f8150ff9ab4b6b24b9bbe62be71b6b16cf0f8';
// where @x402/evm (like viem) expects Multicall3 on every chain
export const MULTICALL3_ADDRESS = '0xcA11bde05977b3631167028862bE2a173976CA11';

const CACHE_DIR = fileURLToPath(new URL('../node_modules/.cache/x402-contracts/', import.meta.url));
const PERMIT2_ROOT = dirname(require.resolve('@uniswap/v4-periphery/package.json'));
const contractSource = (file) => readFileSync(fileURLToPath(new URL(`../contracts/${file}`, import.meta.url)), 'utf8');

const PERMIT2_FILES = [
  'src/AllowanceTransfer.sol',
  'src/EIP712.sol',
  'src/Permit2.sol',
  'src/PermitErrors.sol',
  'src/SignatureTransfer.sol',
  'src/interfaces/IAllowanceTransfer.sol',
  'src/interfaces/IDAIPermit.sol',
  'src/interfaces/IEIP712.sol',
  'src/interfaces/IERC1271.sol',
  'src/interfaces/IPermit2.sol',
  'src/interfaces/ISignatureTransfer.sol',
  'src/libraries/Allowance.sol',
  'src/libraries/Permit2Lib.sol',
  'src/libraries/PermitHash.sol',
  'src/libraries/SafeCast160.sol',
  'src/libraries/SignatureVerification.sol',
  'lib/solmate/src/tokens/ERC20.sol',
  'lib/solmate/src/utils/SafeTransferLib.sol',
];

const permit2Abi = parseAbi(['function DOMAIN_SEPARATOR() view returns (bytes32)']);

// Permit2's foundry.toml and remappings.txt, as forge passes them to solc. Every file of the import
// closure is given up front under forge's names: via-IR output depends on AST ids, so sources
// pulled in through an import callback produce other bytecode (and another CREATE2 address).
function permit2Input() {
  const base = join(PERMIT2_ROOT, 'lib/permit2');
  const sources = {};
  for (const f of PERMIT2_FILES) sources[f] = { content: readFileSync(join(base, f), 'utf8') };
  return {
    language: 'Solidity',
    sources,
    settings: {
      remappings: ['solmate/=lib/solmate/'],
      optimizer: { enabled: true, runs: 1000000 },
      viaIR: true,
      metadata: { bytecodeHash: 'none' },
      outputSelection: { 'src/Permit2.sol': { Permit2: ['evm.bytecode.object'] } },
    },
  };
}

// The project's own fixtures: one self-contained file each, legacy codegen (a second to compile).
function fixtureInput(file, name) {
  return {
    language: 'Solidity',
    sources: { [file]: { content: contractSource(file) } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { [file]: { [name]: ['abi', 'evm.bytecode.object'] } },
    },
  };
}

// { abi, bytecode, cached, ms } for one contract of a standard-JSON input (batch.mjs uses it too).
export function compile(solcPackage, input, file, name) {
  const version = require(`${solcPackage}/package.json`).version;
  const key = createHash('sha256').update(JSON.stringify({ version, input })).digest('hex').slice(0, 32);
  const cacheFile = join(CACHE_DIR, `${name}-${version}-${key}.json`);
  const started = Date.now();
  try {
    const hit = JSON.parse(readFileSync(cacheFile, 'utf8'));
    return { ...hit, cached: true, ms: Date.now() - started };
  } catch {
    // not cached (or unreadable): compile below
  }
  const solc = require(solcPackage);
  const out = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (out.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length) throw new Error(`solc ${version} failed on ${name}:\n${errors.map((e) => e.formattedMessage).join('\n')}`);
  const c = out.contracts?.[file]?.[name];
  if (!c?.evm?.bytecode?.object) throw new Error(`solc ${version} produced no bytecode for ${file}:${name}`);
  const artefact = { abi: c.abi ?? null, bytecode: `0x${c.evm.bytecode.object}` };
  mkdirSync(CACHE_DIR, { recursive: true });
  // written then renamed, so a concurrent reader never sees half a file
  const tmp = `${cacheFile}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(artefact));
  renameSync(tmp, cacheFile);
  return { ...artefact, cached: false, ms: Date.now() - started };
}

export function compilePermit2() {
  const out = compile('solc-0817', permit2Input(), 'src/Permit2.sol', 'Permit2');
  const hash = keccak256(out.bytecode);
  if (hash !== PERMIT2_INIT_CODE_HASH) {
    throw new Error(`Permit2 init code hash ${hash} (${size(out.bytecode)} bytes) is not the canonical ${PERMIT2_INIT_CODE_HASH}: compiler, settings or sources differ`);
  }
  return out;
}

export function compileUptoProxy() {
  return compile('solc-0828', fixtureInput('X402UptoPermit2Proxy.sol', 'x402UptoPermit2Proxy'), 'X402UptoPermit2Proxy.sol', 'x402UptoPermit2Proxy');
}

export function compileMulticall() {
  return compile('solc-0828', fixtureInput('Multicall3TryAggregate.sol', 'Multicall3TryAggregate'), 'Multicall3TryAggregate.sol', 'Multicall3TryAggregate');
}

// EIP712Domain(string name,uint256 chainId,address verifyingContract): Permit2's domain has no version
export function permit2DomainSeparator(chainId) {
  return domainSeparator({ domain: { name: 'Permit2', chainId, verifyingContract: PERMIT2_ADDRESS } });
}

async function mined(publicClient, hash, what) {
  const receipt = await publicClient.waitForTransactionReceipt({ hash, timeout: 30000 });
  if (receipt.status !== 'success') throw new Error(`${what} reverted (${hash})`);
  return receipt;
}

// Deploys normally, then gives `address` the resulting runtime code. Returns the deployment's gas.
export async function placeAt(publicClient, wallet, address, build, args, what) {
  const hash = await wallet.deployContract({ abi: build.abi, bytecode: build.bytecode, args });
  const receipt = await mined(publicClient, hash, `${what} deployment`);
  const runtime = await publicClient.getCode({ address: receipt.contractAddress });
  await publicClient.request({ method: 'anvil_setCode', params: [address, runtime] });
  return receipt.gasUsed;
}

// Puts Permit2, the upto proxy and Multicall3 at their canonical addresses on an anvil chain, given viem clients
// for it (the wallet's account funded). The clients come from the caller rather than being built
// here because chain.mjs, which builds them, loads this module. An existing Permit2 is kept (after
// the same checks); the proxy is always (re)placed. Returns the two addresses and what it cost.
export async function installUpto({ publicClient, wallet }) {
  const chainId = await publicClient.getChainId();
  const permit2Build = compilePermit2();
  const proxyBuild = compileUptoProxy();
  const gas = { permit2: 0n, proxy: 0n, multicall: 0n };

  const predicted = getContractAddress({ opcode: 'CREATE2', from: CREATE2_DEPLOYER, salt: PERMIT2_SALT, bytecode: permit2Build.bytecode });
  if (predicted !== getAddress(PERMIT2_ADDRESS)) throw new Error(`Permit2 would land at ${predicted}, not ${PERMIT2_ADDRESS}`);
  if (!(await publicClient.getCode({ address: PERMIT2_ADDRESS }))) {
    if (!(await publicClient.getCode({ address: CREATE2_DEPLOYER }))) {
      throw new Error(`no CREATE2 deployer at ${CREATE2_DEPLOYER} (anvil started with --disable-default-create2-deployer?)`);
    }
    const hash = await wallet.sendTransaction({ to: CREATE2_DEPLOYER, data: concat([PERMIT2_SALT, permit2Build.bytecode]), gas: 5_000_000n });
    gas.permit2 = (await mined(publicClient, hash, 'Permit2 CREATE2 deployment')).gasUsed;
    if (!(await publicClient.getCode({ address: PERMIT2_ADDRESS }))) throw new Error(`Permit2 deployment left no code at ${PERMIT2_ADDRESS}`);
  }
  const separator = await publicClient.readContract({ address: PERMIT2_ADDRESS, abi: permit2Abi, functionName: 'DOMAIN_SEPARATOR' });
  if (separator !== permit2DomainSeparator(chainId)) {
    throw new Error(`Permit2 DOMAIN_SEPARATOR ${separator} is not EIP-712("Permit2", ${chainId}, ${PERMIT2_ADDRESS})`);
  }

  // deployed once normally (the constructor checks Permit2 is there), then its runtime code copied
  gas.proxy = await placeAt(publicClient, wallet, UPTO_PROXY_ADDRESS, proxyBuild, [PERMIT2_ADDRESS], 'upto proxy');
  const permit2Seen = await publicClient.readContract({ address: UPTO_PROXY_ADDRESS, abi: proxyBuild.abi, functionName: 'PERMIT2' });
  if (permit2Seen !== getAddress(PERMIT2_ADDRESS)) throw new Error(`upto proxy at ${UPTO_PROXY_ADDRESS} names Permit2 ${permit2Seen}`);

  if (!(await publicClient.getCode({ address: MULTICALL3_ADDRESS }))) {
    gas.multicall = await placeAt(publicClient, wallet, MULTICALL3_ADDRESS, compileMulticall(), [], 'Multicall3');
  }

  return {
    permit2: getAddress(PERMIT2_ADDRESS),
    uptoProxy: getAddress(UPTO_PROXY_ADDRESS),
    gas,
    compile: { permit2: { ms: permit2Build.ms, cached: permit2Build.cached }, proxy: { ms: proxyBuild.ms, cached: proxyBuild.cached } },
  };
}
