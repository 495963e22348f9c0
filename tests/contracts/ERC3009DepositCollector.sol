// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

// EIP-3009's receiving half, as FiatTokenV2_2 implements it.
interface IReceiveWithAuthorization {
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        bytes memory signature
    ) external;
}

// The batch-settlement deposit collector for EIP-3009 tokens, at the address @x402/evm 2.27.0
// hard-codes (0x4020806089470a89826cB9fB1f4059150b550004): the official client signs
// ReceiveWithAuthorization(to = this collector, nonce = keccak256(abi.encode(channelId, salt))),
// the facilitator passes `abi.encode(validAfter, validBefore, salt, signature)` through the
// escrow's `deposit`, and this pulls the tokens and forwards them to the escrow.
//
// `receiveWithAuthorization` requires the caller to be the payee, which is why a collector sits in
// between; the nonce derived from the channel id ties the buyer's authorization to one channel, and
// only the escrow may call, so nobody can spend an authorization seen in the mempool elsewhere.
// The escrow's address is an immutable: the rig deploys with the canonical escrow address and then
// copies the runtime code, immutables included, to the canonical collector address.
contract ERC3009DepositCollector {
    using SafeERC20 for IERC20;

    address public immutable x402BatchSettlement;

    error OnlyX402BatchSettlement();
    error InvalidX402BatchSettlementAddress();

    constructor(address settlement) {
        if (settlement == address(0)) revert InvalidX402BatchSettlementAddress();
        x402BatchSettlement = settlement;
    }

    function collect(address payer, address token, uint256 amount, bytes32 channelId, bytes calldata collectorData)
        external
    {
        if (msg.sender != x402BatchSettlement) revert OnlyX402BatchSettlement();
        (uint256 validAfter, uint256 validBefore, uint256 salt, bytes memory signature) =
            abi.decode(collectorData, (uint256, uint256, uint256, bytes));
        IReceiveWithAuthorization(token).receiveWithAuthorization(
            payer, address(this), amount, validAfter, validBefore, keccak256(abi.encode(channelId, salt)), signature
        );
        IERC20(token).safeTransfer(msg.sender, amount);
    }
}
