// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

// A test fixture with the interface and checks of the x402 `upto` Permit2 proxy, which the official
// @x402/evm client signs for and the official facilitator calls at
// 0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002. No package ships that contract, so the end-to-end rig
// compiles this one and places its runtime code there. Its ABI is the one @x402/evm calls
// (`x402UptoPermit2ProxyABI`) plus `InvalidAmount()`, a name the facilitator already maps
// (`permit2_invalid_amount`). The names below (`ISignatureTransfer`, `x402UptoPermit2Proxy`) are
// kept because they appear as `internalType` in that ABI.

// The part of Uniswap Permit2's signature-transfer interface this contract calls.
interface ISignatureTransfer {
    struct TokenPermissions {
        address token;
        uint256 amount;
    }

    struct PermitTransferFrom {
        TokenPermissions permitted;
        uint256 nonce;
        uint256 deadline;
    }

    struct SignatureTransferDetails {
        address to;
        uint256 requestedAmount;
    }

    function permitWitnessTransferFrom(
        PermitTransferFrom calldata permit,
        SignatureTransferDetails calldata transferDetails,
        address owner,
        bytes32 witness,
        string calldata witnessTypeString,
        bytes calldata signature
    ) external;
}

// EIP-2612 `permit`, used by `settleWithPermit` to approve Permit2 without a buyer transaction.
interface IERC20Permit {
    function permit(address owner, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external;
}

contract x402UptoPermit2Proxy {
    // Permit2 is the only dependency and the only immutable, so the runtime code is complete by
    // itself and can be copied to another address (anvil_setCode) without re-running the constructor.
    ISignatureTransfer public immutable PERMIT2;

    // The witness the buyer signs: the facilitator is part of it so that nobody else can choose
    // the settled amount, and `to` so that nobody can redirect the funds.
    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }

    struct EIP2612Permit {
        uint256 value;
        uint256 deadline;
        bytes32 r;
        bytes32 s;
        uint8 v;
    }

    // Permit2 appends this to its PermitWitnessTransferFrom type string; it must equal what the
    // client signs (`uptoPermit2WitnessTypes` in @x402/evm), types sorted as EIP-712 wants.
    string public constant WITNESS_TYPE_STRING =
        "Witness witness)TokenPermissions(address token,uint256 amount)Witness(address to,address facilitator,uint256 validAfter)";

    bytes32 public constant WITNESS_TYPEHASH = keccak256("Witness(address to,address facilitator,uint256 validAfter)");

    event Settled();
    event SettledWithPermit();

    error AmountExceedsPermitted();
    error InvalidAmount();
    error InvalidDestination();
    error InvalidOwner();
    error InvalidPermit2Address();
    error PaymentTooEarly();
    error Permit2612AmountMismatch();
    error ReentrancyGuardReentrantCall();
    error UnauthorizedFacilitator();

    // A plain storage slot rather than transient storage: zero means "not inside a call", which is
    // also what an address given this code by anvil_setCode starts with.
    uint256 private entered;

    modifier nonReentrant() {
        if (entered != 0) revert ReentrancyGuardReentrantCall();
        entered = 1;
        _;
        entered = 0;
    }

    constructor(address permit2) {
        // a proxy pointing at nothing would accept calls and move nothing: refuse to exist
        if (permit2 == address(0) || permit2.code.length == 0) revert InvalidPermit2Address();
        PERMIT2 = ISignatureTransfer(permit2);
    }

    // Transfers `amount` (at most the signed maximum) from `owner` to `witness.to`. Only the
    // facilitator named in the signed witness may call it.
    function settle(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _check(permit, amount, owner, witness);
        _transfer(permit, amount, owner, witness, signature);
        emit Settled();
    }

    // The same as `settle`, first submitting the buyer's EIP-2612 approval of Permit2. A failing
    // `permit` (already used, e.g. submitted by someone else first) is ignored: the transfer then
    // succeeds if and only if Permit2 is approved anyway.
    function settleWithPermit(
        EIP2612Permit calldata permit2612,
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) external nonReentrant {
        _check(permit, amount, owner, witness);
        // the official client signs an approval of exactly the Permit2 maximum
        if (permit2612.value != permit.permitted.amount) revert Permit2612AmountMismatch();
        try IERC20Permit(permit.permitted.token).permit(
            owner, address(PERMIT2), permit2612.value, permit2612.deadline, permit2612.v, permit2612.r, permit2612.s
        ) {} catch {}
        _transfer(permit, amount, owner, witness, signature);
        emit SettledWithPermit();
    }

    function _check(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness
    ) private view {
        if (amount > permit.permitted.amount) revert AmountExceedsPermitted();
        if (msg.sender != witness.facilitator) revert UnauthorizedFacilitator();
        if (amount == 0) revert InvalidAmount();
        if (owner == address(0)) revert InvalidOwner();
        if (witness.to == address(0)) revert InvalidDestination();
        if (block.timestamp < witness.validAfter) revert PaymentTooEarly();
    }

    function _transfer(
        ISignatureTransfer.PermitTransferFrom calldata permit,
        uint256 amount,
        address owner,
        Witness calldata witness,
        bytes calldata signature
    ) private {
        bytes32 witnessHash = keccak256(abi.encode(WITNESS_TYPEHASH, witness.to, witness.facilitator, witness.validAfter));
        PERMIT2.permitWitnessTransferFrom(
            permit,
            ISignatureTransfer.SignatureTransferDetails({to: witness.to, requestedAmount: amount}),
            owner,
            witnessHash,
            WITNESS_TYPE_STRING,
            signature
        );
    }
}
