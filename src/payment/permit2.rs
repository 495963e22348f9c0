//! Local checks of an `upto` payment: a Permit2 `PermitWitnessTransferFrom` signed by the buyer for
//! at most the route's maximum, spendable only through the x402 `upto` proxy contract, paying the
//! route's recipient, and settleable only by the facilitator the challenge named.
//!
//! The checks mirror the official facilitator's, so a payment that fails here would fail there too
//! and the facilitator is never asked about it.

use super::eip712::{recover_signer, SignatureError};
use super::replay::ReplayKey;
use super::verify::{malformed, reject, PaymentRejection, VALID_BEFORE_MARGIN_SECS};
use crate::x402::{PaymentRequirements, UptoEvmPayload};
use alloy_primitives::{address, Address, U256};
use alloy_sol_types::{Eip712Domain, SolStruct};
use std::borrow::Cow;

/// The canonical Permit2 deployment (the same address on every chain).
pub const PERMIT2_ADDRESS: Address = address!("000000000022D473030F116dDEE9F6B43aC78BA3");

/// The x402 `upto` proxy: the only spender an `upto` authorization may name.
pub const UPTO_PERMIT2_PROXY_ADDRESS: Address =
    address!("4020A4f3b7b90ccA423B9fabCc0CE57C6C240002");

/// The `extra` key of an `upto` challenge that names the facilitator allowed to settle.
pub const FACILITATOR_ADDRESS_KEY: &str = "facilitatorAddress";

/// The `extra` key naming how the asset moves; `upto` on EVM always uses Permit2.
pub const ASSET_TRANSFER_METHOD_KEY: &str = "assetTransferMethod";
pub const PERMIT2_TRANSFER_METHOD: &str = "permit2";

alloy_sol_types::sol! {
    struct TokenPermissions {
        address token;
        uint256 amount;
    }
    struct Witness {
        address to;
        address facilitator;
        uint256 validAfter;
    }
    struct PermitWitnessTransferFrom {
        TokenPermissions permitted;
        address spender;
        uint256 nonce;
        uint256 deadline;
        Witness witness;
    }
}

/// An `upto` payment that passed the local checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUpto {
    /// The paying address (`permit2Authorization.from`, EIP-55).
    pub payer: String,
    /// The most the buyer allowed; what is settled never exceeds it.
    pub maximum: u128,
    /// Unix seconds after which Permit2 refuses the authorization.
    pub deadline: u64,
    pub replay_key: ReplayKey,
}

fn address_field(text: &str, field: &'static str) -> Result<Address, PaymentRejection> {
    let valid = text.strip_prefix("0x").is_some_and(|hex| hex.len() == 40);
    if !valid {
        return Err(malformed(&SignatureError::Field(field)));
    }
    text.parse()
        .map_err(|_| malformed(&SignatureError::Field(field)))
}

fn uint_field(text: &str, field: &'static str) -> Result<U256, PaymentRejection> {
    if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(&SignatureError::Field(field)));
    }
    U256::from_str_radix(text, 10).map_err(|_| malformed(&SignatureError::Field(field)))
}

/// The EIP-712 message the buyer signed, read from the wire form.
fn typed_message(payload: &UptoEvmPayload) -> Result<PermitWitnessTransferFrom, PaymentRejection> {
    let auth = &payload.permit2_authorization;
    Ok(PermitWitnessTransferFrom {
        permitted: TokenPermissions {
            token: address_field(&auth.permitted.token, "permitted.token")?,
            amount: uint_field(&auth.permitted.amount, "permitted.amount")?,
        },
        spender: address_field(&auth.spender, "spender")?,
        nonce: uint_field(&auth.nonce, "nonce")?,
        deadline: uint_field(&auth.deadline, "deadline")?,
        witness: Witness {
            to: address_field(&auth.witness.to, "witness.to")?,
            facilitator: address_field(&auth.witness.facilitator, "witness.facilitator")?,
            validAfter: uint_field(&auth.witness.valid_after, "witness.validAfter")?,
        },
    })
}

fn permit2_domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain {
        name: Some(Cow::Borrowed("Permit2")),
        version: None,
        chain_id: Some(U256::from(chain_id)),
        verifying_contract: Some(PERMIT2_ADDRESS),
        salt: None,
    }
}

/// Reads a `U256` that must fit a unix time; anything larger is "never".
fn as_unix(value: U256) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Checks an `upto` payload against the route's requirements (whose `amount` is the maximum and
/// whose `extra.facilitatorAddress` is the facilitator the challenge named); `now` is unix seconds.
pub fn check_upto_authorization(
    payload: &UptoEvmPayload,
    requirements: &PaymentRequirements,
    chain_id: u64,
    now: u64,
) -> Result<VerifiedUpto, PaymentRejection> {
    let message = typed_message(payload)?;
    if message.spender != UPTO_PERMIT2_PROXY_ADDRESS {
        return Err(reject(
            "invalid_permit2_spender",
            format!("the spender must be the upto proxy {UPTO_PERMIT2_PROXY_ADDRESS}"),
        ));
    }
    let pay_to = address_field(&requirements.pay_to, "payTo")?;
    if message.witness.to != pay_to {
        return Err(reject(
            "invalid_permit2_recipient_mismatch",
            format!(
                "witness.to `{}` is not this route's payTo `{pay_to}`",
                message.witness.to
            ),
        ));
    }
    let facilitator = requirements
        .extra
        .get(FACILITATOR_ADDRESS_KEY)
        .and_then(|v| v.as_str())
        .ok_or_else(|| reject("upto_facilitator_mismatch", "no facilitator is configured"))?;
    if message.witness.facilitator != address_field(facilitator, "facilitatorAddress")? {
        return Err(reject(
            "upto_facilitator_mismatch",
            format!("witness.facilitator must be {facilitator}"),
        ));
    }
    let deadline = as_unix(message.deadline);
    if deadline < now.saturating_add(VALID_BEFORE_MARGIN_SECS) {
        return Err(reject(
            "permit2_deadline_expired",
            format!("the authorization expires at {deadline}, too soon to settle (now {now})"),
        ));
    }
    let valid_after = as_unix(message.witness.validAfter);
    if valid_after > now {
        return Err(reject(
            "permit2_not_yet_valid",
            format!("the authorization is not valid before {valid_after} (now {now})"),
        ));
    }
    let maximum: u128 = requirements.amount.parse().map_err(|_| {
        reject(
            "permit2_amount_mismatch",
            "the route's maximum is not an amount",
        )
    })?;
    if message.permitted.amount != U256::from(maximum) {
        return Err(reject(
            "permit2_amount_mismatch",
            format!(
                "permitted.amount is {} but the maximum is {maximum}",
                message.permitted.amount
            ),
        ));
    }
    if message.permitted.token != address_field(&requirements.asset, "asset")? {
        return Err(reject(
            "permit2_token_mismatch",
            format!("permitted.token must be {}", requirements.asset),
        ));
    }

    let digest = message.eip712_signing_hash(&permit2_domain(chain_id));
    let from = address_field(&payload.permit2_authorization.from, "from")?;
    let signer = recover_signer(&payload.signature, &digest).map_err(|e| malformed(&e))?;
    if signer != from {
        return Err(reject(
            "invalid_permit2_signature",
            "the signature is not the payer's",
        ));
    }
    // Permit2 nonces are per owner across every token, so the nonce space is Permit2's, not the
    // asset's: one nonce buys one request whatever token it names.
    let replay_key = ReplayKey::new(
        &requirements.network,
        &PERMIT2_ADDRESS.to_string(),
        &from.to_string(),
        &message.nonce.to_string(),
    );
    Ok(VerifiedUpto {
        payer: from.to_checksum(None),
        maximum,
        deadline,
        replay_key,
    })
}

/// The `extra` of an `upto` challenge, as the official server scheme builds it: the route's own
/// keys, `assetTransferMethod = "permit2"`, and the settling facilitator's address (EIP-55) when
/// its `/supported` names one. A malformed address is refused rather than passed to buyers.
pub fn upto_challenge_extra(
    extra: &serde_json::Value,
    facilitator: Option<&str>,
) -> Result<serde_json::Value, SignatureError> {
    let mut object = extra.as_object().cloned().unwrap_or_default();
    object.insert(
        ASSET_TRANSFER_METHOD_KEY.into(),
        PERMIT2_TRANSFER_METHOD.into(),
    );
    if let Some(text) = facilitator {
        let address = address_field(text, "facilitatorAddress")
            .map_err(|_| SignatureError::Field("facilitatorAddress"))?;
        object.insert(
            FACILITATOR_ADDRESS_KEY.into(),
            address.to_checksum(None).into(),
        );
    }
    Ok(serde_json::Value::Object(object))
}

/// The requirements an `upto` `/settle` carries: the official facilitator reads the amount to move
/// from `amount` (and checks the signature against the authorization's own maximum), so the
/// charge replaces the maximum. `None` for a zero charge, which is not sent at all.
pub fn upto_settle_requirements(
    requirements: &PaymentRequirements,
    charge: &super::lifecycle::MeteredCharge,
) -> Option<PaymentRequirements> {
    charge.settles().then(|| PaymentRequirements {
        amount: charge.amount.to_string(),
        ..requirements.clone()
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    // Signed by the official `@x402/evm` typed data (viem `signTypedData`) with anvil account 1.
    const PAYER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
    const SIGNING_HASH: &str = "0x53951449ad893f010437d790537d37cf13512f783cbcb66f590cfdb33f2acf5c";
    const SIGNATURE: &str = "0x4a2133118acd614f23bad6ab85b6ed844771595c5bef05d999522ac98ba782d2341c7d7e479dc8c077e56a808d8ea8f8523cee701847fb6e56ffce7eafcd80861c";
    const TOKEN: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
    const PAY_TO: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
    const FACILITATOR: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";
    pub(crate) const NOW: u64 = 1_800_000_000;

    pub(crate) fn payload() -> UptoEvmPayload {
        serde_json::from_value(json!({
            "signature": SIGNATURE,
            "permit2Authorization": {
                "from": PAYER,
                "permitted": {"token": TOKEN, "amount": "100000"},
                "spender": "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002",
                "nonce": "123456789",
                "deadline": "1900000000",
                "witness": {"to": PAY_TO, "facilitator": FACILITATOR, "validAfter": "0"}
            }
        }))
        .expect("the official client's payload shape")
    }

    pub(crate) fn requirements() -> PaymentRequirements {
        PaymentRequirements {
            scheme: "upto".into(),
            network: "eip155:84532".into(),
            amount: "100000".into(),
            asset: TOKEN.into(),
            pay_to: PAY_TO.into(),
            max_timeout_seconds: 300,
            extra: json!({"assetTransferMethod": "permit2", "facilitatorAddress": FACILITATOR}),
        }
    }

    fn reason(payload: &UptoEvmPayload, requirements: &PaymentRequirements) -> &'static str {
        check_upto_authorization(payload, requirements, 84532, NOW)
            .expect_err("must be refused")
            .reason
    }

    #[test]
    fn signing_hash_matches_the_official_client() {
        let message = typed_message(&payload()).expect("well formed");
        let digest = message.eip712_signing_hash(&permit2_domain(84532));
        assert_eq!(digest.to_string(), SIGNING_HASH);
    }

    #[test]
    fn the_official_clients_payment_passes() {
        let verified = check_upto_authorization(&payload(), &requirements(), 84532, NOW)
            .expect("a valid payment");
        assert_eq!(verified.payer, PAYER);
        assert_eq!(verified.maximum, 100_000);
        assert_eq!(verified.deadline, 1_900_000_000);
    }

    #[test]
    fn a_raised_maximum_breaks_the_signature() {
        let mut tampered = payload();
        tampered.permit2_authorization.permitted.amount = "200000".into();
        let mut route = requirements();
        route.amount = "200000".into();
        assert_eq!(reason(&tampered, &route), "invalid_permit2_signature");
    }

    #[test]
    fn a_maximum_other_than_the_routes_is_refused() {
        let mut route = requirements();
        route.amount = "50000".into();
        assert_eq!(reason(&payload(), &route), "permit2_amount_mismatch");
    }

    #[test]
    fn a_tampered_witness_is_refused() {
        let mut tampered = payload();
        tampered.permit2_authorization.witness.valid_after = "1".into();
        assert_eq!(
            reason(&tampered, &requirements()),
            "invalid_permit2_signature"
        );
    }

    #[test]
    fn another_recipient_is_refused() {
        let mut route = requirements();
        route.pay_to = FACILITATOR.into();
        assert_eq!(
            reason(&payload(), &route),
            "invalid_permit2_recipient_mismatch"
        );
    }

    #[test]
    fn another_facilitator_is_refused() {
        let mut route = requirements();
        route.extra = json!({"facilitatorAddress": PAY_TO});
        assert_eq!(reason(&payload(), &route), "upto_facilitator_mismatch");
        route.extra = json!({});
        assert_eq!(reason(&payload(), &route), "upto_facilitator_mismatch");
    }

    #[test]
    fn another_spender_is_refused() {
        let mut tampered = payload();
        tampered.permit2_authorization.spender = PAY_TO.into();
        assert_eq!(
            reason(&tampered, &requirements()),
            "invalid_permit2_spender"
        );
    }

    #[test]
    fn another_token_is_refused() {
        let mut route = requirements();
        route.asset = PAY_TO.into();
        assert_eq!(reason(&payload(), &route), "permit2_token_mismatch");
    }

    #[test]
    fn a_deadline_too_close_is_refused() {
        let late = 1_900_000_000 - VALID_BEFORE_MARGIN_SECS + 1;
        let refused = check_upto_authorization(&payload(), &requirements(), 84532, late)
            .expect_err("too late");
        assert_eq!(refused.reason, "permit2_deadline_expired");
    }

    #[test]
    fn another_chain_breaks_the_signature() {
        let refused = check_upto_authorization(&payload(), &requirements(), 8453, NOW)
            .expect_err("signed for Base Sepolia");
        assert_eq!(refused.reason, "invalid_permit2_signature");
    }

    #[test]
    fn malformed_fields_are_refused_not_panicked_on() {
        let mut broken = payload();
        broken.permit2_authorization.nonce = "0x12".into();
        assert_eq!(reason(&broken, &requirements()), "invalid_payload");
        let mut broken = payload();
        broken.signature = "0xzz".into();
        assert_eq!(reason(&broken, &requirements()), "invalid_payload");
    }

    #[test]
    fn the_challenge_extra_is_the_official_servers() {
        // `UptoEvmScheme.enhancePaymentRequirements` of `@x402/evm/upto/server` 2.27.0 on this input.
        let extra = upto_challenge_extra(
            &json!({"name": "USDC", "version": "2"}),
            Some("0x90f79bf6eb2c4f870365e785982e1f101e93b906"),
        )
        .expect("a valid address");
        assert_eq!(
            extra,
            json!({"name": "USDC", "version": "2", "assetTransferMethod": "permit2",
                   "facilitatorAddress": FACILITATOR})
        );
        let without = upto_challenge_extra(&json!({"name": "USDC"}), None).expect("no address");
        assert_eq!(
            without,
            json!({"name": "USDC", "assetTransferMethod": "permit2"})
        );
        assert!(upto_challenge_extra(&json!({}), Some("0x1234")).is_err());
    }

    #[test]
    fn the_facilitator_address_comes_from_supported() {
        let supported: crate::x402::SupportedResponse = serde_json::from_value(json!({
            "kinds": [
                {"x402Version": 2, "scheme": "exact", "network": "eip155:84532"},
                {"x402Version": 2, "scheme": "upto", "network": "eip155:8453",
                 "extra": {"facilitatorAddress": PAY_TO}},
                {"x402Version": 2, "scheme": "upto", "network": "eip155:84532",
                 "extra": {"facilitatorAddress": FACILITATOR}}
            ]
        }))
        .expect("a /supported answer");
        assert_eq!(
            supported.upto_facilitator_address("eip155:84532"),
            Some(FACILITATOR)
        );
        assert_eq!(supported.upto_facilitator_address("eip155:1"), None);
    }

    #[test]
    fn the_settle_request_names_the_charge_not_the_maximum() {
        use crate::payment::{metered_charge, Meter, UsageFallback};
        let per_token = Meter::PerUnit { unit_amount: 20 };
        let charge = metered_charge(per_token, 100_000, UsageFallback::Maximum, Some("1500"));
        let settled = upto_settle_requirements(&requirements(), &charge).expect("a charge");
        assert_eq!(settled.amount, "30000");
        assert_eq!(settled.pay_to, PAY_TO);
        let nothing = metered_charge(per_token, 100_000, UsageFallback::Maximum, Some("0"));
        assert!(upto_settle_requirements(&requirements(), &nothing).is_none());
    }

    #[test]
    fn one_authorization_has_one_replay_key() {
        let verified =
            check_upto_authorization(&payload(), &requirements(), 84532, NOW).expect("valid");
        let again =
            check_upto_authorization(&payload(), &requirements(), 84532, NOW).expect("valid");
        assert_eq!(verified.replay_key, again.replay_key);
    }
}
