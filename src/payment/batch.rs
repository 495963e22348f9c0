//! The `batch-settlement` scheme, seller side: a buyer deposits into an escrow once, then pays each
//! request with an off-chain cumulative voucher that the gateway checks itself.
//!
//! Everything that decides about a channel's money is here, as pure functions of the channel's
//! record, the payment and the clock: the voucher checks, the reservation that serialises one
//! channel's requests, the commit of the actual charge, the release on failure, the corrective
//! answer when a buyer's cumulative disagrees, and which vouchers a claim carries. The store only
//! compares and swaps the records these functions compute.

use super::eip712::recover_signer;
use alloy_primitives::{address, aliases::U40, Address, B256, U256};
use alloy_sol_types::{sol, Eip712Domain, SolStruct};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;

/// The scheme's name in requirements and payloads.
pub use crate::x402::BATCH_SETTLEMENT;

/// Where the escrow contract sits on every chain; vouchers are signed for this address.
pub const BATCH_SETTLEMENT_CONTRACT: Address = address!("4020074e9dF2ce1deE5A9C1b5c3f541D02a10003");

/// The escrow's bounds on the delay between a buyer's withdrawal request and its execution.
pub const MIN_WITHDRAW_DELAY_SECS: u64 = 900;
pub const MAX_WITHDRAW_DELAY_SECS: u64 = 2_592_000;

/// The `extra` keys of a batch-settlement requirement.
pub const RECEIVER_AUTHORIZER_KEY: &str = "receiverAuthorizer";
pub const WITHDRAW_DELAY_KEY: &str = "withdrawDelay";
pub const MIN_DEPOSIT_KEY: &str = "minDeposit";

/// The refusal codes the seller side emits (the scheme's own vocabulary, which the official
/// client acts on).
pub mod codes {
    pub const CUMULATIVE_AMOUNT_MISMATCH: &str =
        "invalid_batch_settlement_evm_cumulative_amount_mismatch";
    pub const CHANNEL_BUSY: &str = "invalid_batch_settlement_evm_channel_busy";
    pub const CHARGE_EXCEEDS_SIGNED_CUMULATIVE: &str =
        "invalid_batch_settlement_evm_charge_exceeds_signed_cumulative";
    pub const MISSING_CHANNEL: &str = "invalid_batch_settlement_evm_missing_channel";
    pub const CHANNEL_ID_MISMATCH: &str = "invalid_batch_settlement_evm_channel_id_mismatch";
    pub const CHANNEL_ID_INVALID: &str = "invalid_batch_settlement_evm_channel_id_invalid";
    pub const RECEIVER_MISMATCH: &str = "invalid_batch_settlement_evm_receiver_mismatch";
    pub const RECEIVER_AUTHORIZER_MISMATCH: &str =
        "invalid_batch_settlement_evm_receiver_authorizer_mismatch";
    pub const TOKEN_MISMATCH: &str = "invalid_batch_settlement_evm_token_mismatch";
    pub const WITHDRAW_DELAY_MISMATCH: &str =
        "invalid_batch_settlement_evm_withdraw_delay_mismatch";
    pub const WITHDRAW_DELAY_OUT_OF_RANGE: &str =
        "invalid_batch_settlement_evm_withdraw_delay_out_of_range";
    pub const VOUCHER_SIGNATURE: &str = "invalid_batch_settlement_evm_voucher_signature";
    pub const CUMULATIVE_EXCEEDS_BALANCE: &str =
        "invalid_batch_settlement_evm_cumulative_exceeds_balance";
    pub const CUMULATIVE_BELOW_CLAIMED: &str =
        "invalid_batch_settlement_evm_cumulative_below_claimed";
    pub const PAYLOAD: &str = "invalid_batch_settlement_evm_payload";
    pub const REFUND_NO_BALANCE: &str = "invalid_batch_settlement_evm_refund_no_balance";
    pub const REFUND_AMOUNT_INVALID: &str = "invalid_batch_settlement_evm_refund_amount_invalid";
    /// The facilitator refused to settle a refund (its reason follows in the message).
    pub const REFUND_REFUSED: &str = "invalid_batch_settlement_evm_refund_payload";
    pub const STATE_UNAVAILABLE: &str =
        "invalid_batch_settlement_evm_verification_state_unavailable";
}

sol! {
    /// A channel's immutable terms; the channel id is their EIP-712 hash.
    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    /// What a buyer signs per request: the most the seller may ever claim from the channel.
    struct Voucher {
        bytes32 channelId;
        uint128 maxClaimableAmount;
    }

    /// A cooperative refund the receiver authorizer signs.
    struct Refund {
        bytes32 channelId;
        uint256 nonce;
        uint128 amount;
    }

    /// One row of a claim.
    struct ClaimEntry {
        bytes32 channelId;
        uint128 maxClaimableAmount;
        uint128 totalClaimed;
    }

    /// The rows the receiver authorizer signs for one claim transaction.
    struct ClaimBatch {
        ClaimEntry[] claims;
    }
}

/// The escrow's EIP-712 domain on `chain_id`.
pub fn escrow_domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain {
        name: Some(Cow::Borrowed("x402 Batch Settlement")),
        version: Some(Cow::Borrowed("1")),
        chain_id: Some(U256::from(chain_id)),
        verifying_contract: Some(BATCH_SETTLEMENT_CONTRACT),
        salt: None,
    }
}

/// The gateway's own receiver-authorizer key: it signs the gateway's claims and refunds, so no
/// facilitator needs to be trusted with them. Never printed.
pub struct ReceiverAuthorizerKey {
    key: k256::ecdsa::SigningKey,
    address: Address,
}

impl std::fmt::Debug for ReceiverAuthorizerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiverAuthorizerKey({})", self.address)
    }
}

/// A receiver-authorizer key that is not a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("receiver_authorizer_key is not a 32-byte hex private key")]
pub struct BadAuthorizerKey;

impl ReceiverAuthorizerKey {
    pub fn from_hex(text: &str) -> Result<Self, BadAuthorizerKey> {
        let hex = text.trim().trim_start_matches("0x");
        let bytes = alloy_primitives::hex::decode(hex).map_err(|_| BadAuthorizerKey)?;
        let key = k256::ecdsa::SigningKey::from_slice(&bytes).map_err(|_| BadAuthorizerKey)?;
        let address = Address::from_public_key(key.verifying_key());
        Ok(Self { key, address })
    }

    /// The address channels name as their receiver authorizer (EIP-55).
    pub fn address(&self) -> String {
        self.address.to_checksum(None)
    }

    /// A 65-byte `r‖s‖v` signature of `digest`, as the escrow checks it.
    pub fn sign(&self, digest: &B256) -> Result<String, BatchRefusal> {
        let (signature, recovery) = self
            .key
            .sign_prehash_recoverable(digest.as_slice())
            .map_err(|e| refuse(codes::PAYLOAD, format!("cannot sign: {e}")))?;
        let mut bytes = signature.to_bytes().to_vec();
        bytes.push(27 + recovery.to_byte());
        Ok(format!("0x{}", alloy_primitives::hex::encode(bytes)))
    }
}

/// A refusal: the scheme's code and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct BatchRefusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> BatchRefusal {
    BatchRefusal {
        code,
        message: message.into(),
    }
}

/// Amounts travel as decimal strings; records keep them the same way so that a record reads the
/// same in every backend and in an operator's listing.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        super::amount(&text).map_err(serde::de::Error::custom)
    }
}

/// A whole number of atomic units, as the wire writes them.
pub fn amount(text: &str) -> Result<u128, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a whole number"));
    }
    text.parse()
        .map_err(|_| format!("`{text}` is larger than a uint128"))
}

/// A channel's terms as the wire writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelConfigWire {
    pub payer: String,
    pub payer_authorizer: String,
    pub receiver: String,
    pub receiver_authorizer: String,
    pub token: String,
    pub withdraw_delay: u64,
    pub salt: String,
}

fn parse_address(text: &str, field: &str) -> Result<Address, BatchRefusal> {
    let hex = text.strip_prefix("0x").unwrap_or_default();
    if hex.len() != 40 {
        return Err(refuse(
            codes::PAYLOAD,
            format!("channelConfig.{field} is not an address"),
        ));
    }
    text.parse().map_err(|_| {
        refuse(
            codes::PAYLOAD,
            format!("channelConfig.{field} is not an address"),
        )
    })
}

fn parse_bytes32(text: &str) -> Option<B256> {
    let hex = text.strip_prefix("0x")?;
    if hex.len() != 64 {
        return None;
    }
    text.parse().ok()
}

impl ChannelConfigWire {
    /// The terms as the contract reads them.
    pub fn parsed(&self) -> Result<ChannelConfig, BatchRefusal> {
        Ok(ChannelConfig {
            payer: parse_address(&self.payer, "payer")?,
            payerAuthorizer: parse_address(&self.payer_authorizer, "payerAuthorizer")?,
            receiver: parse_address(&self.receiver, "receiver")?,
            receiverAuthorizer: parse_address(&self.receiver_authorizer, "receiverAuthorizer")?,
            token: parse_address(&self.token, "token")?,
            withdrawDelay: U40::try_from(self.withdraw_delay).map_err(|_| {
                refuse(
                    codes::WITHDRAW_DELAY_OUT_OF_RANGE,
                    "channelConfig.withdrawDelay does not fit a uint40",
                )
            })?,
            salt: parse_bytes32(&self.salt)
                .ok_or_else(|| refuse(codes::PAYLOAD, "channelConfig.salt is not bytes32"))?,
        })
    }
}

/// The id of a channel on `chain_id`: the EIP-712 hash of its terms under the escrow's domain.
pub fn channel_id(config: &ChannelConfig, chain_id: u64) -> B256 {
    config.eip712_signing_hash(&escrow_domain(chain_id))
}

/// What a voucher for `max_claimable` on `channel` signs.
pub fn voucher_digest(channel: B256, max_claimable: u128, chain_id: u64) -> B256 {
    Voucher {
        channelId: channel,
        maxClaimableAmount: max_claimable,
    }
    .eip712_signing_hash(&escrow_domain(chain_id))
}

/// What a refund of `amount` at refund nonce `nonce` signs.
pub fn refund_digest(channel: B256, nonce: u64, amount: u128, chain_id: u64) -> B256 {
    Refund {
        channelId: channel,
        nonce: U256::from(nonce),
        amount,
    }
    .eip712_signing_hash(&escrow_domain(chain_id))
}

/// A buyer's voucher as the wire writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VoucherWire {
    pub channel_id: String,
    pub max_claimable_amount: String,
    pub signature: String,
}

/// The deposit a `deposit` payload carries; its authorization is the facilitator's to check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DepositWire {
    pub amount: String,
    #[serde(default)]
    pub authorization: Value,
}

/// The three payloads a buyer sends (`payload` of a `PAYMENT-SIGNATURE`). The kinds `claim` and
/// `settle` are the seller's own, never accepted from a buyer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum BatchPayload {
    /// Opens or tops up the channel, and pays this request.
    Deposit {
        channel_config: ChannelConfigWire,
        voucher: VoucherWire,
        deposit: DepositWire,
    },
    /// Pays this request from the channel's balance.
    Voucher {
        channel_config: ChannelConfigWire,
        voucher: VoucherWire,
    },
    /// Asks for the channel's unspent balance back (a voucher charging nothing).
    Refund {
        channel_config: ChannelConfigWire,
        voucher: VoucherWire,
        #[serde(default)]
        amount: Option<String>,
    },
}

/// Which of the three a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    Deposit,
    Voucher,
    Refund,
}

impl PayloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::Voucher => "voucher",
            Self::Refund => "refund",
        }
    }
}

impl BatchPayload {
    /// Reads a payment's `payload`; anything else than the three buyer kinds is refused.
    pub fn from_json(raw: &Value) -> Result<Self, BatchRefusal> {
        Self::deserialize(raw).map_err(|e| {
            refuse(
                codes::PAYLOAD,
                format!("the batch-settlement payload cannot be read: {e}"),
            )
        })
    }

    pub fn kind(&self) -> PayloadKind {
        match self {
            Self::Deposit { .. } => PayloadKind::Deposit,
            Self::Voucher { .. } => PayloadKind::Voucher,
            Self::Refund { .. } => PayloadKind::Refund,
        }
    }

    fn parts(&self) -> (&ChannelConfigWire, &VoucherWire) {
        match self {
            Self::Deposit {
                channel_config,
                voucher,
                ..
            }
            | Self::Voucher {
                channel_config,
                voucher,
            }
            | Self::Refund {
                channel_config,
                voucher,
                ..
            } => (channel_config, voucher),
        }
    }
}

/// What the route's option says a channel must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchTerms {
    pub chain_id: u64,
    /// `payTo`.
    pub receiver: Address,
    pub receiver_authorizer: Address,
    /// `asset`.
    pub token: Address,
    pub withdraw_delay: u64,
    /// `amount`: the most one request costs, and what a voucher adds to the cumulative.
    pub price: u128,
    pub max_timeout_secs: u64,
}

/// A payment whose channel matches the route, not yet known to be covered or signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPayment {
    pub kind: PayloadKind,
    pub config: ChannelConfigWire,
    pub payer: Address,
    pub payer_authorizer: Address,
    /// The channel id, lowercase hex: the store's key.
    pub channel: String,
    pub channel_id: B256,
    /// The voucher's ceiling.
    pub signed_max: u128,
    pub signature: String,
    /// A deposit's amount.
    pub deposit: Option<u128>,
    /// A refund's requested amount (`None`: all that is left).
    pub refund_amount: Option<String>,
}

/// Checks a payment's channel against the route (spec: the channel id recomputes from the config
/// with the requirement's chain, and every term the seller set is the route's).
pub fn check_channel(
    payload: &BatchPayload,
    terms: &BatchTerms,
) -> Result<ChannelPayment, BatchRefusal> {
    let (wire, voucher) = payload.parts();
    let config = wire.parsed()?;
    let claimed_id = parse_bytes32(&voucher.channel_id).ok_or_else(|| {
        refuse(
            codes::CHANNEL_ID_INVALID,
            "voucher.channelId is not a 0x-prefixed 32-byte hex string",
        )
    })?;
    let id = channel_id(&config, terms.chain_id);
    if id != claimed_id {
        return Err(refuse(
            codes::CHANNEL_ID_MISMATCH,
            "voucher.channelId is not the id of channelConfig on this chain",
        ));
    }
    if config.receiver != terms.receiver {
        return Err(refuse(
            codes::RECEIVER_MISMATCH,
            "channelConfig.receiver is not this route's payTo",
        ));
    }
    if config.receiverAuthorizer != terms.receiver_authorizer
        || config.receiverAuthorizer == Address::ZERO
    {
        return Err(refuse(
            codes::RECEIVER_AUTHORIZER_MISMATCH,
            "channelConfig.receiverAuthorizer is not the one this route names",
        ));
    }
    if config.token != terms.token {
        return Err(refuse(
            codes::TOKEN_MISMATCH,
            "channelConfig.token is not this route's asset",
        ));
    }
    if !(MIN_WITHDRAW_DELAY_SECS..=MAX_WITHDRAW_DELAY_SECS).contains(&wire.withdraw_delay) {
        return Err(refuse(
            codes::WITHDRAW_DELAY_OUT_OF_RANGE,
            format!(
                "channelConfig.withdrawDelay must be {MIN_WITHDRAW_DELAY_SECS} to {MAX_WITHDRAW_DELAY_SECS} seconds"
            ),
        ));
    }
    if wire.withdraw_delay != terms.withdraw_delay {
        return Err(refuse(
            codes::WITHDRAW_DELAY_MISMATCH,
            "channelConfig.withdrawDelay is not this route's",
        ));
    }
    let signed_max = amount(&voucher.max_claimable_amount)
        .map_err(|e| refuse(codes::PAYLOAD, format!("voucher.maxClaimableAmount {e}")))?;
    let (deposit, refund_amount) = match payload {
        BatchPayload::Deposit { deposit, .. } => {
            let value = amount(&deposit.amount)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| {
                    refuse(
                        codes::PAYLOAD,
                        "deposit.amount is not a positive whole number",
                    )
                })?;
            (Some(value), None)
        }
        BatchPayload::Refund { amount, .. } => (None, amount.clone()),
        BatchPayload::Voucher { .. } => (None, None),
    };
    Ok(ChannelPayment {
        kind: payload.kind(),
        config: wire.clone(),
        payer: config.payer,
        payer_authorizer: config.payerAuthorizer,
        channel: format!("{id:#x}"),
        channel_id: id,
        signed_max,
        signature: voucher.signature.clone(),
        deposit,
        refund_amount,
    })
}

/// Whether the voucher's signature is the payer authorizer's. A channel without a payer
/// authorizer is signed by the payer's contract wallet, which only the chain can check.
pub fn voucher_signed(payment: &ChannelPayment, chain_id: u64) -> VoucherSignature {
    if payment.payer_authorizer == Address::ZERO {
        return VoucherSignature::NeedsChain;
    }
    let digest = voucher_digest(payment.channel_id, payment.signed_max, chain_id);
    match recover_signer(&payment.signature, &digest) {
        Ok(signer) if signer == payment.payer_authorizer => VoucherSignature::Valid,
        Ok(_) => VoucherSignature::Invalid(
            "the voucher is not signed by channelConfig.payerAuthorizer".into(),
        ),
        Err(e) => VoucherSignature::Invalid(format!("the voucher's signature is unusable: {e}")),
    }
}

/// What the local signature check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoucherSignature {
    Valid,
    Invalid(String),
    /// Only the facilitator (the chain) can tell.
    NeedsChain,
}

/// The channel's on-chain state as the gateway last learnt it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnchainMirror {
    #[serde(with = "decimal")]
    pub balance: u128,
    #[serde(with = "decimal")]
    pub total_claimed: u128,
    /// Unix seconds of a pending withdrawal request, 0 if none.
    pub withdraw_requested_at: u64,
    pub refund_nonce: u64,
}

fn read_amount(extra: &Value, key: &str) -> Option<u128> {
    match extra.get(key)? {
        Value::String(s) => amount(s).ok(),
        Value::Number(n) => n.as_u64().map(u128::from),
        _ => None,
    }
}

fn read_count(extra: &Value, key: &str) -> Option<u64> {
    match extra.get(key)? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

impl OnchainMirror {
    /// The state a facilitator's `/verify` answer (`extra`) or settle answer
    /// (`extra.channelState`) reports; `None` when it reports no balance.
    pub fn from_extra(extra: &Value) -> Option<Self> {
        let state = extra.get("channelState").unwrap_or(extra);
        Some(Self {
            balance: read_amount(state, "balance")?,
            total_claimed: read_amount(state, "totalClaimed").unwrap_or(0),
            withdraw_requested_at: read_count(state, "withdrawRequestedAt").unwrap_or(0),
            refund_nonce: read_count(state, "refundNonce").unwrap_or(0),
        })
    }
}

/// A request holding a channel: its voucher is stored only once the upstream succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRequest {
    pub id: String,
    #[serde(with = "decimal")]
    pub signed_max_claimable: u128,
    pub expires_at_ms: u64,
    /// The record did not exist before this request: a failure deletes it again.
    #[serde(default)]
    pub created: bool,
}

/// One channel's state: what was charged, the latest voucher (the seller's claim on the escrow),
/// and the mirrored on-chain state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRecord {
    pub channel_id: String,
    pub channel_config: ChannelConfigWire,
    /// The chain the channel lives on (claims are per chain).
    pub network: String,
    #[serde(with = "decimal")]
    pub charged_cumulative_amount: u128,
    #[serde(with = "decimal")]
    pub signed_max_claimable: u128,
    pub signature: String,
    #[serde(flatten)]
    pub onchain: OnchainMirror,
    /// Unix milliseconds the mirror was last refreshed from the facilitator (`None`: never).
    #[serde(default)]
    pub onchain_synced_at_ms: Option<u64>,
    pub last_request_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingRequest>,
}

impl ChannelRecord {
    /// What was charged and not yet claimed on chain: the seller's exposure on this channel.
    pub fn unclaimed(&self) -> u128 {
        self.charged_cumulative_amount
            .saturating_sub(self.onchain.total_claimed)
    }

    fn live_pending(&self, now_ms: u64) -> Option<&PendingRequest> {
        self.pending.as_ref().filter(|p| p.expires_at_ms > now_ms)
    }

    pub fn to_json(&self) -> String {
        // A record is plain strings and integers: writing it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// The charge already made on a channel as the payment's voucher implies it (for a seller without
/// a record): the official seller infers `signed − price`, floored at 0, and leaves it to the
/// facilitator to refuse a ceiling at or below what was claimed on chain.
fn inferred_charged(payment: &ChannelPayment, price: u128) -> u128 {
    match payment.kind {
        PayloadKind::Refund => payment.signed_max,
        PayloadKind::Deposit | PayloadKind::Voucher => payment.signed_max.saturating_sub(price),
    }
}

/// The ceiling the payment must sign given what was charged: one more request's price, or (a
/// refund) nothing more.
fn expected_ceiling(kind: PayloadKind, charged: u128, price: u128) -> u128 {
    match kind {
        PayloadKind::Refund => charged,
        PayloadKind::Deposit | PayloadKind::Voucher => charged.saturating_add(price),
    }
}

/// The first check of every payment: does the voucher sign exactly what was charged plus this
/// request? A mismatch against a record is answered with the corrective challenge.
pub fn cumulative_check(
    record: Option<&ChannelRecord>,
    payment: &ChannelPayment,
    price: u128,
) -> Result<(), CumulativeMismatch> {
    let charged = record.map_or_else(
        || inferred_charged(payment, price),
        |r| r.charged_cumulative_amount,
    );
    if payment.signed_max == expected_ceiling(payment.kind, charged, price) {
        return Ok(());
    }
    Err(CumulativeMismatch {
        expected: expected_ceiling(payment.kind, charged, price),
        signed: payment.signed_max,
    })
}

/// The voucher's ceiling is not what the gateway's record says it must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CumulativeMismatch {
    pub expected: u128,
    pub signed: u128,
}

impl CumulativeMismatch {
    pub fn refusal(&self) -> BatchRefusal {
        refuse(
            codes::CUMULATIVE_AMOUNT_MISMATCH,
            format!(
                "the voucher signs {} but the channel's charges call for {}: resync from the channel state in this answer",
                self.signed, self.expected
            ),
        )
    }
}

/// Whether the gateway may judge a plain voucher itself, or must ask the facilitator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalVerdict {
    /// Valid against the mirror, which stays as it is.
    Valid,
    Invalid(BatchRefusal),
    /// Deposits, refunds, contract-wallet channels, unknown channels and stale mirrors go to the
    /// facilitator, whose answer refreshes the mirror.
    AskFacilitator,
}

/// How long a mirror is trusted: a third of the withdraw delay, within 30 s and 5 min (a buyer's
/// withdrawal takes the whole delay to execute, so a claim made on a stale mirror still lands).
pub fn mirror_ttl_ms(withdraw_delay_secs: u64) -> u64 {
    (withdraw_delay_secs * 1000 / 3).clamp(30_000, 300_000)
}

/// Judges a voucher with the record alone when its mirror is fresh (spec: config, signature,
/// ceiling within the balance and above what was claimed).
pub fn local_verdict(
    record: Option<&ChannelRecord>,
    payment: &ChannelPayment,
    chain_id: u64,
    now_ms: u64,
) -> LocalVerdict {
    let Some(record) = record else {
        return LocalVerdict::AskFacilitator;
    };
    if payment.kind != PayloadKind::Voucher {
        return LocalVerdict::AskFacilitator;
    }
    let fresh = record.onchain_synced_at_ms.is_some_and(|at| {
        now_ms.saturating_sub(at) <= mirror_ttl_ms(payment.config.withdraw_delay)
    });
    if !fresh || record.channel_id != payment.channel {
        return LocalVerdict::AskFacilitator;
    }
    match voucher_signed(payment, chain_id) {
        VoucherSignature::Valid => {}
        VoucherSignature::NeedsChain => return LocalVerdict::AskFacilitator,
        VoucherSignature::Invalid(message) => {
            return LocalVerdict::Invalid(refuse(codes::VOUCHER_SIGNATURE, message))
        }
    }
    if payment.signed_max > record.onchain.balance {
        return LocalVerdict::Invalid(refuse(
            codes::CUMULATIVE_EXCEEDS_BALANCE,
            format!(
                "the voucher signs {} but the channel holds {}: deposit more",
                payment.signed_max, record.onchain.balance
            ),
        ));
    }
    if payment.signed_max <= record.onchain.total_claimed {
        return LocalVerdict::Invalid(refuse(
            codes::CUMULATIVE_BELOW_CLAIMED,
            format!(
                "the voucher signs {} but {} was already claimed on chain",
                payment.signed_max, record.onchain.total_claimed
            ),
        ));
    }
    LocalVerdict::Valid
}

/// Why a channel could not be reserved for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveRefusal {
    /// Another request holds the channel.
    Busy,
    /// The voucher disagrees with what the channel's record says was charged.
    Mismatch(CumulativeMismatch),
}

impl ReserveRefusal {
    pub fn refusal(&self) -> BatchRefusal {
        match self {
            Self::Busy => refuse(
                codes::CHANNEL_BUSY,
                "another request on this channel is in progress; retry when it has been answered",
            ),
            Self::Mismatch(m) => m.refusal(),
        }
    }
}

/// The mirror a reservation writes: a fresh facilitator answer, or the record's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorSource {
    /// Verified locally: the record's mirror and its age stand.
    Kept,
    /// The facilitator answered now with this state.
    Fresh(OnchainMirror),
}

/// Holds the channel for this request: the record as it must be written (spec: one request per
/// channel, and the voucher is not kept until the upstream succeeded).
pub fn reserve(
    current: Option<&ChannelRecord>,
    payment: &ChannelPayment,
    terms: &BatchTerms,
    network: &str,
    mirror: MirrorSource,
    pending_id: &str,
    now_ms: u64,
) -> Result<ChannelRecord, ReserveRefusal> {
    if current.and_then(|r| r.live_pending(now_ms)).is_some() {
        return Err(ReserveRefusal::Busy);
    }
    cumulative_check(current, payment, terms.price).map_err(ReserveRefusal::Mismatch)?;
    let charged = current.map_or_else(
        || inferred_charged(payment, terms.price),
        |r| r.charged_cumulative_amount,
    );
    let (onchain, synced) = match mirror {
        MirrorSource::Fresh(m) => (m, Some(now_ms)),
        MirrorSource::Kept => (
            current.map(|r| r.onchain).unwrap_or_default(),
            current.and_then(|r| r.onchain_synced_at_ms),
        ),
    };
    let ttl_ms = terms
        .max_timeout_secs
        .saturating_mul(1000)
        .clamp(5_000, 600_000);
    Ok(ChannelRecord {
        channel_id: payment.channel.clone(),
        channel_config: payment.config.clone(),
        network: network.to_string(),
        charged_cumulative_amount: charged,
        // The latest voucher kept stays the last one committed until this one is paid for.
        signed_max_claimable: current.map_or(charged, |r| r.signed_max_claimable),
        signature: current.map(|r| r.signature.clone()).unwrap_or_default(),
        onchain,
        onchain_synced_at_ms: synced,
        last_request_ms: now_ms,
        pending: Some(PendingRequest {
            id: pending_id.to_string(),
            signed_max_claimable: payment.signed_max,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
            created: current.is_none(),
        }),
    })
}

/// A committed charge: the record before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub previous: ChannelRecord,
    pub next: ChannelRecord,
    pub charged: u128,
}

/// Why a charge could not be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitRefusal {
    /// The record is gone (the store was wiped): nothing is charged.
    Missing,
    /// The reservation is not this request's any more (it expired and another request took the
    /// channel): nothing is charged.
    NotHeld,
    /// The charge would pass what the buyer signed: nothing is charged, the channel is freed
    /// (the record to write).
    ExceedsSigned(Box<ChannelRecord>),
}

impl CommitRefusal {
    pub fn refusal(&self) -> BatchRefusal {
        match self {
            Self::Missing => refuse(
                codes::MISSING_CHANNEL,
                "the channel's record was lost before the charge was kept; nothing was charged",
            ),
            Self::NotHeld => refuse(
                codes::CHANNEL_BUSY,
                "the channel was taken by another request before the charge was kept; nothing was charged",
            ),
            Self::ExceedsSigned(_) => refuse(
                codes::CHARGE_EXCEEDS_SIGNED_CUMULATIVE,
                "the charge would pass what the voucher signs; nothing was charged",
            ),
        }
    }
}

/// Keeps the charge of a request whose upstream succeeded: the cumulative grows by `charge` (at
/// most the price) and the request's voucher becomes the channel's latest. A deposit's settlement
/// also brings the chain's new state (`mirror`).
pub fn commit(
    current: Option<&ChannelRecord>,
    payment: &ChannelPayment,
    pending_id: &str,
    charge: u128,
    mirror: Option<OnchainMirror>,
    now_ms: u64,
) -> Result<Committed, CommitRefusal> {
    let current = current.ok_or(CommitRefusal::Missing)?;
    if current.pending.as_ref().map(|p| p.id.as_str()) != Some(pending_id) {
        return Err(CommitRefusal::NotHeld);
    }
    let charged = current.charged_cumulative_amount.saturating_add(charge);
    if charged > payment.signed_max {
        let mut freed = current.clone();
        freed.pending = None;
        return Err(CommitRefusal::ExceedsSigned(Box::new(freed)));
    }
    let mut next = current.clone();
    next.charged_cumulative_amount = charged;
    next.signed_max_claimable = payment.signed_max;
    next.signature = payment.signature.clone();
    next.last_request_ms = now_ms;
    next.pending = None;
    match mirror {
        Some(mirror) => {
            next.onchain = mirror;
            next.onchain_synced_at_ms = Some(now_ms);
        }
        // A deposit settled without the chain's new state: the mirror predates the deposit, so
        // the next voucher is judged by the facilitator rather than against a stale balance.
        None if payment.kind == PayloadKind::Deposit => next.onchain_synced_at_ms = None,
        None => {}
    }
    Ok(Committed {
        previous: current.clone(),
        next,
        charged: charge,
    })
}

/// What releasing a failed request's reservation writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The reservation is not this request's (any more): nothing to write.
    Untouched,
    /// The channel freed, its charges unchanged.
    Write(Box<ChannelRecord>),
    /// The record this request created is removed again.
    Delete,
}

/// Frees the channel of a request that failed: nothing it carried is charged or kept.
pub fn release(current: Option<&ChannelRecord>, pending_id: &str) -> Release {
    let Some(current) = current else {
        return Release::Untouched;
    };
    match &current.pending {
        Some(p) if p.id == pending_id && p.created => Release::Delete,
        Some(p) if p.id == pending_id => {
            let mut freed = current.clone();
            freed.pending = None;
            Release::Write(Box::new(freed))
        }
        _ => Release::Untouched,
    }
}

fn channel_state(record: &ChannelRecord, charged_cumulative: u128) -> Value {
    json!({
        "channelId": record.channel_id,
        "balance": record.onchain.balance.to_string(),
        "totalClaimed": record.onchain.total_claimed.to_string(),
        "withdrawRequestedAt": record.onchain.withdraw_requested_at,
        "refundNonce": record.onchain.refund_nonce.to_string(),
        "chargedCumulativeAmount": charged_cumulative.to_string(),
    })
}

/// The `extra` a corrective challenge adds to the channel's requirement: the state to resync to,
/// and the latest voucher that proves it (the buyer checks its own signature on it).
pub fn corrective_extra(record: &ChannelRecord) -> Value {
    json!({
        "channelState": channel_state(record, record.charged_cumulative_amount),
        "voucherState": {
            "signedMaxClaimable": record.signed_max_claimable.to_string(),
            "signature": record.signature,
        },
    })
}

/// The `extra` of a receipt for a committed charge: what this request cost and the new cumulative
/// (the buyer checks `previous + chargedAmount`).
pub fn receipt_extra(committed: &Committed) -> Value {
    json!({
        "chargedAmount": committed.charged.to_string(),
        "channelState": channel_state(&committed.next, committed.next.charged_cumulative_amount),
    })
}

/// One voucher a claim carries: the channel's latest, claiming what was charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRow {
    pub channel: String,
    pub config: ChannelConfigWire,
    pub max_claimable: u128,
    pub signature: String,
    pub total_claimed: u128,
}

/// The channels with charges not yet claimed, largest exposure first, at most `limit` of them.
pub fn claim_rows<'a>(
    records: impl IntoIterator<Item = &'a ChannelRecord>,
    limit: usize,
) -> Vec<ClaimRow> {
    let mut rows: Vec<&ChannelRecord> = records
        .into_iter()
        .filter(|r| r.unclaimed() > 0 && !r.signature.is_empty())
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.unclaimed()));
    rows.into_iter()
        .take(limit)
        .map(|r| ClaimRow {
            channel: r.channel_id.clone(),
            config: r.channel_config.clone(),
            max_claimable: r.signed_max_claimable,
            signature: r.signature.clone(),
            total_claimed: r.charged_cumulative_amount,
        })
        .collect()
}

/// What the receiver authorizer signs for a claim of `rows`.
pub fn claim_batch_digest(rows: &[ClaimRow], chain_id: u64) -> Result<B256, BatchRefusal> {
    let claims = rows
        .iter()
        .map(|row| {
            Ok(ClaimEntry {
                channelId: parse_bytes32(&row.channel)
                    .ok_or_else(|| refuse(codes::PAYLOAD, "a stored channel id is malformed"))?,
                maxClaimableAmount: row.max_claimable,
                totalClaimed: row.total_claimed,
            })
        })
        .collect::<Result<Vec<_>, BatchRefusal>>()?;
    Ok(ClaimBatch { claims }.eip712_signing_hash(&escrow_domain(chain_id)))
}

/// The `/settle` payload of a claim (`claimAuthorizerSignature` left out when the facilitator is
/// the receiver authorizer and signs itself).
pub fn claim_payload(rows: &[ClaimRow], authorizer_signature: Option<&str>) -> Value {
    let claims: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "voucher": {
                    "channel": row.config,
                    "maxClaimableAmount": row.max_claimable.to_string(),
                },
                "signature": row.signature,
                "totalClaimed": row.total_claimed.to_string(),
            })
        })
        .collect();
    let mut payload = json!({"type": "claim", "claims": claims});
    if let (Some(signature), Some(map)) = (authorizer_signature, payload.as_object_mut()) {
        map.insert("claimAuthorizerSignature".into(), json!(signature));
    }
    payload
}

/// The `/settle` payload that sweeps what was claimed to the receiver.
pub fn settle_payload(receiver: &str, token: &str) -> Value {
    json!({"type": "settle", "receiver": receiver, "token": token})
}

/// The record after a claim of `row` landed: the chain now holds `total_claimed`.
pub fn claimed(mut record: ChannelRecord, row: &ClaimRow) -> ChannelRecord {
    record.onchain.total_claimed = record.onchain.total_claimed.max(row.total_claimed);
    record
}

/// What a request paid by voucher is charged: its price, or less when the upstream's
/// `Settlement-Overrides` says so (atomic units, a percentage of the price or a dollar amount, as
/// for `upto`), never more than the price the voucher covers. An unreadable override is an
/// error, and the caller charges the price.
pub fn voucher_charge(price: u128, decimals: u8, overrides: Option<&str>) -> Result<u128, String> {
    match overrides {
        None => Ok(price),
        Some(text) => super::settlement_override(text, price, decimals).map(|v| v.min(price)),
    }
}

/// How much a cooperative refund returns: what the buyer asked for (a positive whole number), or
/// everything deposited and not charged.
pub fn refund_amount(
    record: &ChannelRecord,
    requested: Option<&str>,
) -> Result<u128, BatchRefusal> {
    let remainder = record
        .onchain
        .balance
        .saturating_sub(record.charged_cumulative_amount);
    if remainder == 0 {
        return Err(refuse(
            codes::REFUND_NO_BALANCE,
            "nothing deposited on this channel is left uncharged",
        ));
    }
    match requested {
        None => Ok(remainder),
        Some(text) => match amount(text) {
            Ok(value) if value > 0 => Ok(value),
            _ => Err(refuse(
                codes::REFUND_AMOUNT_INVALID,
                format!("refund amount `{text}` is not a positive whole number"),
            )),
        },
    }
}

/// The refund payload the facilitator settles: the buyer's, completed with the amount (when the
/// buyer left it to the seller), the channel's refund nonce, and a claim of what was charged and
/// not yet claimed, so that the refund can never return charged funds. The receiver authorizer's
/// signatures are the gateway's own key's, or left to the facilitator that is the authorizer.
pub fn refund_settle_payload(
    buyer_payload: &Value,
    record: &ChannelRecord,
    payment: &ChannelPayment,
    amount: u128,
    authorizer: Option<(&ReceiverAuthorizerKey, u64)>,
) -> Result<Value, BatchRefusal> {
    let mut payload = buyer_payload.clone();
    if let Some(map) = payload.as_object_mut() {
        if !map.contains_key("amount") {
            map.insert("amount".into(), json!(amount.to_string()));
        }
        map.insert(
            "refundNonce".into(),
            json!(record.onchain.refund_nonce.to_string()),
        );
        let refunded = map
            .get("amount")
            .and_then(Value::as_str)
            .and_then(|a| super::batch::amount(a).ok())
            .unwrap_or(amount);
        if let Some((key, chain_id)) = authorizer {
            let digest = refund_digest(
                payment.channel_id,
                record.onchain.refund_nonce,
                refunded,
                chain_id,
            );
            map.insert(
                "refundAuthorizerSignature".into(),
                json!(key.sign(&digest)?),
            );
        }
        // Always one row, as the facilitator requires: a row claiming no more than the chain
        // already holds is a no-op there.
        {
            if let Some((key, chain_id)) = authorizer {
                let row = ClaimRow {
                    channel: payment.channel.clone(),
                    config: payment.config.clone(),
                    max_claimable: payment.signed_max,
                    signature: payment.signature.clone(),
                    total_claimed: record.charged_cumulative_amount,
                };
                let digest = claim_batch_digest(&[row], chain_id)?;
                map.insert("claimAuthorizerSignature".into(), json!(key.sign(&digest)?));
            }
            map.insert(
                "claims".into(),
                json!([{
                    "voucher": {
                        "channel": payment.config,
                        "maxClaimableAmount": payment.signed_max.to_string(),
                    },
                    "signature": payment.signature,
                    "totalClaimed": record.charged_cumulative_amount.to_string(),
                }]),
            );
        }
    }
    Ok(payload)
}

/// The channel after a refund settled with the chain's new state: gone when nothing uncharged is
/// left in it, else freed with the new mirror.
pub fn after_refund(
    current: Option<&ChannelRecord>,
    pending_id: &str,
    mirror: Option<OnchainMirror>,
    now_ms: u64,
) -> Release {
    let Some(current) = current else {
        return Release::Untouched;
    };
    if current.pending.as_ref().map(|p| p.id.as_str()) != Some(pending_id) {
        return Release::Untouched;
    }
    let Some(mirror) = mirror else {
        // The chain's state is unknown: the channel is freed and its mirror left to be refreshed.
        let mut freed = current.clone();
        freed.pending = None;
        freed.onchain_synced_at_ms = None;
        return Release::Write(Box::new(freed));
    };
    if mirror.balance <= current.charged_cumulative_amount {
        return Release::Delete;
    }
    let mut next = current.clone();
    next.pending = None;
    next.onchain = mirror;
    next.onchain_synced_at_ms = Some(now_ms);
    next.last_request_ms = now_ms;
    Release::Write(Box::new(next))
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
