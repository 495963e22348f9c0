use super::*;
use crate::buyer::Wallet;
use crate::pricing::{PaymentOption, PricedRoute};
use crate::x402::{Authorization, ExactEvmPayload, PaymentPayloadV1, PaymentPayloadV2};
use serde_json::json;

const BUYER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
const BUYER: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const USDC: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const NOW: u64 = 1_740_672_100;

fn requirements() -> PaymentRequirements {
    PaymentRequirements {
        scheme: "exact".into(),
        network: "eip155:84532".into(),
        amount: "10000".into(),
        asset: USDC.into(),
        pay_to: PAY_TO.into(),
        max_timeout_seconds: 60,
        extra: json!({"name": "USDC", "version": "2"}),
    }
}

fn route() -> PricedRoute {
    PricedRoute {
        options: vec![PaymentOption {
            requirements: requirements(),
            chain_id: 84532,
            v1_network: Some("base-sepolia"),
            amount: 10_000,
            asset_symbol: "USDC".into(),
            decimals: 6,
            domain_separator: Default::default(),
        }],
        description: String::new(),
        mime_type: String::new(),
        settle: crate::payment::SettlementPolicy::AfterSuccess,
        verify: Default::default(),
        sync_settle: false,
        challenge: Default::default(),
        price_rules: Vec::new(),
        metering: None,
        access: None,
        discovery: None,
        settle_buffer: None,
    }
}

fn authorization() -> Authorization {
    Authorization {
        from: BUYER.into(),
        to: PAY_TO.into(),
        value: "10000".into(),
        valid_after: "1740672089".into(),
        valid_before: "1740672154".into(),
        nonce: "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480".into(),
    }
}

/// A v2 payment for `accepted`, signed over `auth` by the buyer.
fn paid(accepted: PaymentRequirements, auth: Authorization) -> PaymentPayload {
    let wallet = Wallet::from_hex(BUYER_KEY).unwrap();
    let signature = wallet.sign(&auth, &accepted, 84532).unwrap();
    PaymentPayload::V2(PaymentPayloadV2 {
        accepted,
        payload: ExactEvmPayload {
            signature,
            authorization: auth,
        },
    })
}

#[test]
fn signatures_match_an_independent_eip712_implementation() {
    // Produced by viem's signTypedData for the same key and message (RFC 6979 is deterministic).
    let expected = "0x0978ef91661e0088a36002fb5c5456591ca1a7378d12c8e494f9e9a7eed756886aa3ee3b7b01093c277e0723edc70a1b16558ffbe5b0d143fae5d8b9d96c979b1c";
    let wallet = Wallet::from_hex(BUYER_KEY).unwrap();
    assert_eq!(wallet.address(), BUYER);
    assert_eq!(
        wallet
            .sign(&authorization(), &requirements(), 84532)
            .unwrap(),
        expected
    );
}

#[test]
fn a_correct_payment_passes_with_its_payer_and_amount() {
    let verified = check_payment(&route(), &paid(requirements(), authorization()), NOW).unwrap();
    assert_eq!(verified.payer, BUYER);
    assert_eq!(verified.amount, 10_000);
    assert_eq!(verified.valid_before, 1_740_672_154);
    assert!(verified.signature_checked_locally);
}

#[test]
fn a_lowered_amount_is_refused_even_when_signed() {
    let mut accepted = requirements();
    accepted.amount = "5000".into();
    let mut auth = authorization();
    auth.value = "5000".into();
    let err = check_payment(&route(), &paid(accepted, auth.clone()), NOW).unwrap_err();
    assert_eq!(err.reason, "no_matching_requirements");
    assert!(
        err.message
            .contains("accepted.amount is `5000` but this route requires `10000`"),
        "{}",
        err.message
    );

    // Honest `accepted`, lowered authorization: caught by the value check.
    let err = check_payment(&route(), &paid(requirements(), auth), NOW).unwrap_err();
    assert_eq!(err.reason, "invalid_exact_evm_authorization_value");
}

#[test]
fn another_recipient_is_refused() {
    let mut accepted = requirements();
    accepted.pay_to = BUYER.into();
    let err = check_payment(&route(), &paid(accepted, authorization()), NOW).unwrap_err();
    assert!(err.message.contains("accepted.payTo"), "{}", err.message);
    let mut auth = authorization();
    auth.to = BUYER.into();
    let err = check_payment(&route(), &paid(requirements(), auth), NOW).unwrap_err();
    assert_eq!(err.reason, "invalid_exact_evm_recipient_mismatch");
}

#[test]
fn the_time_window_is_enforced_with_a_settlement_margin() {
    let payment = paid(requirements(), authorization());
    assert_eq!(
        check_payment(&route(), &payment, 1_740_672_080)
            .unwrap_err()
            .reason,
        "invalid_exact_evm_payload_authorization_valid_after"
    );
    assert!(check_payment(&route(), &payment, 1_740_672_154 - 7).is_ok());
    assert_eq!(
        check_payment(&route(), &payment, 1_740_672_154 - 6)
            .unwrap_err()
            .reason,
        "invalid_exact_evm_payload_authorization_valid_before"
    );
}

#[test]
fn a_signature_by_someone_else_is_refused() {
    let payment = paid(requirements(), authorization());
    let PaymentPayload::V2(mut v2) = payment else {
        unreachable!()
    };
    v2.payload.authorization.from = PAY_TO.into();
    let err = check_payment(&route(), &PaymentPayload::V2(v2.clone()), NOW).unwrap_err();
    assert_eq!(err.reason, "invalid_exact_evm_signature");
    assert!(
        err.message
            .contains(&format!("not by authorization.from {PAY_TO}")),
        "{}",
        err.message
    );

    v2.payload.signature = "0x1234".into();
    assert_eq!(
        check_payment(&route(), &PaymentPayload::V2(v2.clone()), NOW)
            .unwrap_err()
            .reason,
        "invalid_exact_evm_signature"
    );

    // Longer signatures belong to smart wallets: left to the facilitator.
    v2.payload.signature = format!("0x{}", "ab".repeat(200));
    let verified = check_payment(&route(), &PaymentPayload::V2(v2), NOW).unwrap();
    assert!(!verified.signature_checked_locally);
}

#[test]
fn v1_payments_match_by_network_name() {
    let PaymentPayload::V2(v2) = paid(requirements(), authorization()) else {
        unreachable!()
    };
    let v1 = PaymentPayload::V1(PaymentPayloadV1 {
        scheme: "exact".into(),
        network: "base-sepolia".into(),
        payload: v2.payload.clone(),
    });
    assert!(check_payment(&route(), &v1, NOW).is_ok());
    let v1 = PaymentPayload::V1(PaymentPayloadV1 {
        scheme: "exact".into(),
        network: "base".into(),
        payload: v2.payload,
    });
    let err = check_payment(&route(), &v1, NOW).unwrap_err();
    assert_eq!(err.reason, "no_matching_requirements");
    assert!(err.message.contains("network `base`"));
}

mod upto {
    use super::*;
    use crate::payment::permit2::tests::{payload, requirements as upto_requirements, NOW};
    use crate::x402::PaymentPayloadUpto;

    fn upto_route() -> PricedRoute {
        let requirements = upto_requirements();
        PricedRoute {
            options: vec![PaymentOption {
                amount: requirements.amount.parse().expect("a number"),
                requirements,
                chain_id: 84532,
                v1_network: None,
                asset_symbol: "USDC".into(),
                decimals: 6,
                domain_separator: Default::default(),
            }],
            ..route()
        }
    }

    fn upto_payment(accepted: PaymentRequirements) -> PaymentPayload {
        PaymentPayload::Upto(PaymentPayloadUpto {
            accepted,
            payload: payload(),
        })
    }

    #[test]
    fn an_upto_payment_is_checked_against_the_maximum_and_keyed_on_its_permit2_nonce() {
        let verified = check_payment(&upto_route(), &upto_payment(upto_requirements()), NOW)
            .expect("the official client's payment");
        assert_eq!(
            verified.amount, 100_000,
            "the maximum, until the response says more"
        );
        assert_eq!(verified.valid_before, 1_900_000_000, "the Permit2 deadline");
        assert!(verified.signature_checked_locally);
        let again =
            check_payment(&upto_route(), &upto_payment(upto_requirements()), NOW).expect("valid");
        assert_eq!(verified.replay_key, again.replay_key);
    }

    #[test]
    fn an_upto_payment_naming_other_terms_is_refused_locally() {
        let mut other_facilitator = upto_requirements();
        other_facilitator.extra["facilitatorAddress"] =
            json!("0x0000000000000000000000000000000000000bad");
        let refused = check_payment(&upto_route(), &upto_payment(other_facilitator), NOW)
            .expect_err("not this route's facilitator");
        assert_eq!(refused.reason, "no_matching_requirements");
        let mut other_maximum = upto_requirements();
        other_maximum.amount = "1".into();
        let refused = check_payment(&upto_route(), &upto_payment(other_maximum), NOW)
            .expect_err("not this route's maximum");
        assert_eq!(refused.reason, "no_matching_requirements");
        let mut tampered = payload();
        tampered.permit2_authorization.witness.to = PAY_TO.into();
        let refused = check_payment(
            &upto_route(),
            &PaymentPayload::Upto(PaymentPayloadUpto {
                accepted: upto_requirements(),
                payload: tampered,
            }),
            NOW,
        )
        .expect_err("another recipient");
        assert_eq!(refused.reason, "invalid_permit2_recipient_mismatch");
    }

    #[test]
    fn an_exact_payment_does_not_buy_an_upto_route() {
        let mut accepted = requirements();
        accepted.scheme = "upto".into();
        let refused = check_payment(&upto_route(), &paid(accepted, authorization()), NOW)
            .expect_err("no EIP-3009 authorization buys a metered route");
        assert_eq!(refused.reason, "no_matching_requirements");
    }
}
