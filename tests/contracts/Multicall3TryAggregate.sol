// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

// The one Multicall3 function @x402/evm calls, `tryAggregate`, for the address every public chain
// has it at (0xcA11bde05977b3631167028862bE2a173976CA11) and a bare anvil chain does not. The
// official facilitator reads its diagnostics (Permit2 allowance, balance, proxy presence) through
// it; without it those reads fail and every failed simulation is reported as the generic
// `permit2_simulation_failed` instead of the specific reason a real chain gives.
contract Multicall3TryAggregate {
    struct Call {
        address target;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    // Same selector and semantics as Multicall3: every call is made; a failing one reverts the
    // whole batch only when `requireSuccess` is set.
    function tryAggregate(bool requireSuccess, Call[] calldata calls) external payable returns (Result[] memory returnData) {
        returnData = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            (bool success, bytes memory ret) = calls[i].target.call(calls[i].callData);
            if (requireSuccess && !success) revert("Multicall3: call failed");
            returnData[i] = Result(success, ret);
        }
    }
}
