//! The seller side of `batch-settlement`, rule by rule. The hashes and the signature are checked
//! against what the official client (`@x402/evm` 2.27.0, viem) computes and signs for the same
//! channel.

use super::*;
use alloy_primitives::b256;

const CHAIN: u64 = 84532;
const NETWORK: &str = "eip155:84532";
/// Anvil's first key signs as the buyer (payer and payer authorizer).
const BUYER: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
const RECEIVER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const AUTHORIZER: &str = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
const TOKEN: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
/// `computeChannelId(config, "eip155:84532")` of the config below.
const CHANNEL: &str = "0x6c047aa3c440f8d7fb4440259e3b68834ef25bde8a9082f17db3b3c79e61945e";
/// The buyer's signature of a voucher for 3000 on that channel (viem `signTypedData`).
const SIGNED_3000: &str = "0xd8549067eaad200e3cb22c32a04d82b49daaae0d440a47904a3be8593575aa0a5741b71259bd4c2c4874ff2c0120293fbfd972e8e30416524c4b7257dd6883f11c";
const PRICE: u128 = 1000;
const NOW: u64 = 1_800_000_000_000;

fn config() -> ChannelConfigWire {
    ChannelConfigWire {
        payer: BUYER.into(),
        payer_authorizer: BUYER.into(),
        receiver: RECEIVER.into(),
        receiver_authorizer: AUTHORIZER.into(),
        token: TOKEN.into(),
        withdraw_delay: 900,
        salt: format!("0x{}07", "00".repeat(31)),
    }
}

fn terms() -> BatchTerms {
    BatchTerms {
        chain_id: CHAIN,
        receiver: RECEIVER.parse().expect("address"),
        receiver_authorizer: AUTHORIZER.parse().expect("address"),
        token: TOKEN.parse().expect("address"),
        withdraw_delay: 900,
        price: PRICE,
        max_timeout_secs: 60,
    }
}

fn voucher_payload(config: ChannelConfigWire, max: u128, signature: &str) -> BatchPayload {
    BatchPayload::Voucher {
        channel_config: config,
        voucher: VoucherWire {
            channel_id: CHANNEL.into(),
            max_claimable_amount: max.to_string(),
            signature: signature.into(),
        },
    }
}

fn voucher(max: u128) -> ChannelPayment {
    check_channel(&voucher_payload(config(), max, SIGNED_3000), &terms()).expect("matching channel")
}

fn record(charged: u128, balance: u128, claimed: u128, synced: Option<u64>) -> ChannelRecord {
    ChannelRecord {
        channel_id: CHANNEL.into(),
        channel_config: config(),
        network: NETWORK.into(),
        charged_cumulative_amount: charged,
        signed_max_claimable: charged,
        signature: "0xprevious".into(),
        onchain: OnchainMirror {
            balance,
            total_claimed: claimed,
            withdraw_requested_at: 0,
            refund_nonce: 0,
        },
        onchain_synced_at_ms: synced,
        last_request_ms: NOW - 10_000,
        pending: None,
    }
}

#[test]
fn channel_id_voucher_refund_and_claim_digests_are_the_official_ones() {
    let parsed = config().parsed().expect("config");
    let id = channel_id(&parsed, CHAIN);
    assert_eq!(format!("{id:#x}"), CHANNEL);
    assert_eq!(
        recover_signer(SIGNED_3000, &voucher_digest(id, 3000, CHAIN)).expect("recovers"),
        BUYER.parse::<Address>().expect("address")
    );
    assert_eq!(
        refund_digest(id, 3, 55, CHAIN),
        b256!("b71eb3219fee7bd1a96ce76731764b3b550061c5357fe4581542b5d878b49038")
    );
    let row = ClaimRow {
        channel: CHANNEL.into(),
        config: config(),
        max_claimable: 3000,
        signature: SIGNED_3000.into(),
        total_claimed: 2000,
    };
    assert_eq!(
        claim_batch_digest(&[row], CHAIN).expect("digest"),
        b256!("47a1df9f71778f80d1ffb81958c6770392222406ad385b81eb713f1dd799d283")
    );
    // The id is bound to the chain.
    assert_ne!(channel_id(&parsed, 1), id);
}

#[test]
fn the_three_buyer_payloads_are_read_and_seller_kinds_refused() {
    let raw = serde_json::json!({
        "type": "deposit",
        "channelConfig": config(),
        "voucher": {"channelId": CHANNEL, "maxClaimableAmount": "1000", "signature": "0x"},
        "deposit": {"amount": "10000", "authorization": {"erc3009Authorization": {}}},
    });
    let payload = BatchPayload::from_json(&raw).expect("deposit");
    assert_eq!(payload.kind(), PayloadKind::Deposit);
    let checked = check_channel(&payload, &terms()).expect("channel");
    assert_eq!(checked.deposit, Some(10_000));
    let refund = serde_json::json!({
        "type": "refund", "channelConfig": config(), "amount": "5",
        "voucher": {"channelId": CHANNEL, "maxClaimableAmount": "1000", "signature": "0x"},
    });
    let refund = BatchPayload::from_json(&refund).expect("refund");
    assert_eq!(refund.kind(), PayloadKind::Refund);
    assert_eq!(
        check_channel(&refund, &terms())
            .expect("channel")
            .refund_amount
            .as_deref(),
        Some("5")
    );
    for kind in ["claim", "settle", "other"] {
        let raw = serde_json::json!({"type": kind, "claims": []});
        assert_eq!(
            BatchPayload::from_json(&raw).expect_err(kind).code,
            codes::PAYLOAD
        );
    }
}

#[test]
fn a_channel_on_other_terms_than_the_route_is_refused_with_the_term_named() {
    type Edit = Box<dyn Fn(&mut ChannelConfigWire)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|c| c.receiver = BUYER.into()),
            codes::RECEIVER_MISMATCH,
        ),
        (
            Box::new(|c| c.receiver_authorizer = BUYER.into()),
            codes::RECEIVER_AUTHORIZER_MISMATCH,
        ),
        (Box::new(|c| c.token = BUYER.into()), codes::TOKEN_MISMATCH),
        (
            Box::new(|c| c.withdraw_delay = 1000),
            codes::WITHDRAW_DELAY_MISMATCH,
        ),
        (
            Box::new(|c| c.withdraw_delay = 60),
            codes::WITHDRAW_DELAY_OUT_OF_RANGE,
        ),
    ];
    for (change, code) in cases {
        let mut changed = config();
        change(&mut changed);
        // The channel id names the changed config, so only the term itself is wrong.
        let id = channel_id(&changed.parsed().expect("config"), CHAIN);
        let payload = BatchPayload::Voucher {
            channel_config: changed,
            voucher: VoucherWire {
                channel_id: format!("{id:#x}"),
                max_claimable_amount: "1000".into(),
                signature: SIGNED_3000.into(),
            },
        };
        assert_eq!(
            check_channel(&payload, &terms()).expect_err(code).code,
            code
        );
    }
    // An id that is not the config's, or not an id at all.
    let mut other = config();
    other.salt = format!("0x{}08", "00".repeat(31));
    assert_eq!(
        check_channel(&voucher_payload(other, 1000, SIGNED_3000), &terms())
            .expect_err("id")
            .code,
        codes::CHANNEL_ID_MISMATCH
    );
    let mut payload = voucher_payload(config(), 1000, SIGNED_3000);
    if let BatchPayload::Voucher { voucher, .. } = &mut payload {
        voucher.channel_id = "0x1234".into();
    }
    assert_eq!(
        check_channel(&payload, &terms()).expect_err("invalid").code,
        codes::CHANNEL_ID_INVALID
    );
}

#[test]
fn the_voucher_signature_must_be_the_payer_authorizers() {
    assert_eq!(
        voucher_signed(&voucher(3000), CHAIN),
        VoucherSignature::Valid
    );
    // The same signature over another ceiling recovers to someone else.
    assert!(matches!(
        voucher_signed(&voucher(4000), CHAIN),
        VoucherSignature::Invalid(_)
    ));
    let mut garbage = voucher(3000);
    garbage.signature = "0xzz".into();
    assert!(matches!(
        voucher_signed(&garbage, CHAIN),
        VoucherSignature::Invalid(_)
    ));
    let mut contract_wallet = voucher(3000);
    contract_wallet.payer_authorizer = Address::ZERO;
    assert_eq!(
        voucher_signed(&contract_wallet, CHAIN),
        VoucherSignature::NeedsChain
    );
}

#[test]
fn the_cumulative_must_be_what_was_charged_plus_the_price() {
    let r = record(2000, 10_000, 0, Some(NOW));
    assert_eq!(cumulative_check(Some(&r), &voucher(3000), PRICE), Ok(()));
    let stale = cumulative_check(Some(&r), &voucher(2000), PRICE).expect_err("stale client");
    assert_eq!((stale.expected, stale.signed), (3000, 2000));
    assert_eq!(stale.refusal().code, codes::CUMULATIVE_AMOUNT_MISMATCH);
    // Without a record the charge is inferred from the voucher (the facilitator then checks it
    // against the chain).
    assert_eq!(cumulative_check(None, &voucher(3000), PRICE), Ok(()));
    // A refund charges nothing more.
    let mut refund = voucher(2000);
    refund.kind = PayloadKind::Refund;
    assert_eq!(cumulative_check(Some(&r), &refund, PRICE), Ok(()));
}

#[test]
fn a_fresh_mirror_lets_a_voucher_be_judged_without_the_facilitator() {
    let fresh = record(2000, 10_000, 0, Some(NOW - 1000));
    assert_eq!(
        local_verdict(Some(&fresh), &voucher(3000), CHAIN, NOW),
        LocalVerdict::Valid
    );
    // Stale mirror (older than a third of 900 s, i.e. 300 s), no record, never synced: ask.
    let stale = record(2000, 10_000, 0, Some(NOW - 300_001));
    for r in [Some(&stale), None, Some(&record(2000, 10_000, 0, None))] {
        assert_eq!(
            local_verdict(r, &voucher(3000), CHAIN, NOW),
            LocalVerdict::AskFacilitator
        );
    }
    // Deposits always go to the facilitator.
    let mut deposit = voucher(3000);
    deposit.kind = PayloadKind::Deposit;
    assert_eq!(
        local_verdict(Some(&fresh), &deposit, CHAIN, NOW),
        LocalVerdict::AskFacilitator
    );
    let verdict = |r: &ChannelRecord| match local_verdict(Some(r), &voucher(3000), CHAIN, NOW) {
        LocalVerdict::Invalid(refusal) => refusal.code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        verdict(&record(2000, 2500, 0, Some(NOW))),
        codes::CUMULATIVE_EXCEEDS_BALANCE
    );
    assert_eq!(
        verdict(&record(2000, 10_000, 3000, Some(NOW))),
        codes::CUMULATIVE_BELOW_CLAIMED
    );
    let mut forged = voucher(3000);
    forged.signed_max = 3001;
    assert!(matches!(
        local_verdict(Some(&fresh), &forged, CHAIN, NOW),
        LocalVerdict::Invalid(BatchRefusal {
            code: codes::VOUCHER_SIGNATURE,
            ..
        })
    ));
}

#[test]
fn one_request_at_a_time_holds_a_channel_until_it_commits_or_releases() {
    let r = record(2000, 10_000, 0, Some(NOW));
    let held = reserve(
        Some(&r),
        &voucher(3000),
        &terms(),
        NETWORK,
        MirrorSource::Kept,
        "a",
        NOW,
    )
    .expect("free channel");
    // Nothing charged and the previous voucher kept until the upstream has answered.
    assert_eq!(held.charged_cumulative_amount, 2000);
    assert_eq!(held.signature, "0xprevious");
    assert_eq!(held.onchain_synced_at_ms, Some(NOW));
    let pending = held.pending.clone().expect("reserved");
    assert_eq!((pending.id.as_str(), pending.created), ("a", false));
    assert_eq!(pending.expires_at_ms, NOW + 60_000);
    // A second request, even one with the right voucher, finds the channel busy...
    assert_eq!(
        reserve(
            Some(&held),
            &voucher(3000),
            &terms(),
            NETWORK,
            MirrorSource::Kept,
            "b",
            NOW + 1
        ),
        Err(ReserveRefusal::Busy)
    );
    assert_eq!(ReserveRefusal::Busy.refusal().code, codes::CHANNEL_BUSY);
    // ...until the reservation expires.
    assert!(reserve(
        Some(&held),
        &voucher(3000),
        &terms(),
        NETWORK,
        MirrorSource::Kept,
        "b",
        NOW + 60_000
    )
    .is_ok());

    let committed = commit(Some(&held), &voucher(3000), "a", PRICE, None, NOW + 5).expect("held");
    assert_eq!(committed.next.charged_cumulative_amount, 3000);
    assert_eq!(committed.next.signed_max_claimable, 3000);
    assert_eq!(committed.next.signature, SIGNED_3000);
    assert_eq!(committed.next.pending, None);
    assert_eq!(committed.previous, held);
    assert_eq!(committed.next.unclaimed(), 3000);

    // Released instead: nothing charged, the channel free.
    match release(Some(&held), "a") {
        Release::Write(freed) => {
            assert_eq!(freed.pending, None);
            assert_eq!(freed.charged_cumulative_amount, 2000);
            assert_eq!(freed.signature, "0xprevious");
        }
        other => panic!("expected the channel freed, got {other:?}"),
    }
    // Another request's release touches nothing.
    assert_eq!(release(Some(&held), "b"), Release::Untouched);
    assert_eq!(release(None, "a"), Release::Untouched);
}

#[test]
fn a_stale_voucher_is_refused_at_reservation_with_the_record_to_resync_from() {
    let r = record(2000, 10_000, 0, Some(NOW));
    let refused = reserve(
        Some(&r),
        &voucher(2000),
        &terms(),
        NETWORK,
        MirrorSource::Kept,
        "a",
        NOW,
    )
    .expect_err("stale");
    assert!(matches!(refused, ReserveRefusal::Mismatch(_)));
    let extra = corrective_extra(&r);
    assert_eq!(extra["channelState"]["chargedCumulativeAmount"], "2000");
    assert_eq!(extra["channelState"]["balance"], "10000");
    assert_eq!(extra["channelState"]["channelId"], CHANNEL);
    assert_eq!(extra["voucherState"]["signedMaxClaimable"], "2000");
    assert_eq!(extra["voucherState"]["signature"], "0xprevious");
}

#[test]
fn a_new_channel_is_created_by_its_first_request_and_removed_if_that_fails() {
    let mirror = OnchainMirror {
        balance: 10_000,
        total_claimed: 0,
        withdraw_requested_at: 0,
        refund_nonce: 0,
    };
    let mut deposit = voucher(1000);
    deposit.kind = PayloadKind::Deposit;
    let held = reserve(
        None,
        &deposit,
        &terms(),
        NETWORK,
        MirrorSource::Fresh(mirror),
        "a",
        NOW,
    )
    .expect("new channel");
    assert_eq!(held.charged_cumulative_amount, 0);
    assert_eq!(held.onchain, mirror);
    assert!(held.pending.as_ref().expect("reserved").created);
    assert_eq!(release(Some(&held), "a"), Release::Delete);
    // Committed with the deposit's settled state instead.
    let settled = OnchainMirror {
        balance: 20_000,
        ..mirror
    };
    let committed =
        commit(Some(&held), &deposit, "a", PRICE, Some(settled), NOW + 9).expect("held");
    assert_eq!(committed.next.onchain.balance, 20_000);
    assert_eq!(committed.next.onchain_synced_at_ms, Some(NOW + 9));
    let extra = receipt_extra(&committed);
    assert_eq!(extra["chargedAmount"], "1000");
    // Settled without the chain's new state: the mirror is stale, the next voucher goes to the
    // facilitator.
    let unknown = commit(Some(&held), &deposit, "a", PRICE, None, NOW + 9).expect("held");
    assert_eq!(unknown.next.onchain_synced_at_ms, None);
    assert_eq!(
        local_verdict(Some(&unknown.next), &voucher(2000), CHAIN, NOW + 10),
        LocalVerdict::AskFacilitator
    );
    assert_eq!(extra["channelState"]["chargedCumulativeAmount"], "1000");
}

#[test]
fn a_charge_is_kept_only_by_the_request_holding_the_channel_and_within_the_voucher() {
    let r = record(2000, 10_000, 0, Some(NOW));
    let held = reserve(
        Some(&r),
        &voucher(3000),
        &terms(),
        NETWORK,
        MirrorSource::Kept,
        "a",
        NOW,
    )
    .expect("free");
    assert_eq!(
        commit(None, &voucher(3000), "a", PRICE, None, NOW),
        Err(CommitRefusal::Missing)
    );
    assert_eq!(
        commit(Some(&held), &voucher(3000), "b", PRICE, None, NOW),
        Err(CommitRefusal::NotHeld)
    );
    match commit(Some(&held), &voucher(3000), "a", PRICE + 1, None, NOW) {
        Err(CommitRefusal::ExceedsSigned(freed)) => {
            assert_eq!(freed.pending, None);
            assert_eq!(freed.charged_cumulative_amount, 2000);
        }
        other => panic!("expected the charge refused, got {other:?}"),
    }
    // A metered charge below the price is kept as charged.
    let partial = commit(Some(&held), &voucher(3000), "a", 400, None, NOW).expect("held");
    assert_eq!(partial.next.charged_cumulative_amount, 2400);
    assert_eq!(receipt_extra(&partial)["chargedAmount"], "400");
}

#[test]
fn claims_carry_each_channels_latest_voucher_for_what_was_charged() {
    let mut a = record(3000, 10_000, 1000, Some(NOW));
    a.signature = SIGNED_3000.into();
    a.signed_max_claimable = 3000;
    let mut b = record(500, 10_000, 0, Some(NOW));
    b.channel_id = format!("0x{}", "11".repeat(32));
    b.signature = "0xb".into();
    let settled = record(700, 10_000, 700, Some(NOW));
    let rows = claim_rows([&b, &settled, &a], 10);
    assert_eq!(
        rows.iter().map(|r| r.channel.as_str()).collect::<Vec<_>>(),
        [CHANNEL, b.channel_id.as_str()],
        "largest exposure first, fully claimed channels left out"
    );
    assert_eq!((rows[0].max_claimable, rows[0].total_claimed), (3000, 3000));
    assert_eq!(claim_rows([&a, &b], 1).len(), 1);
    let payload = claim_payload(&rows[..1], None);
    assert_eq!(payload["type"], "claim");
    assert_eq!(payload["claims"][0]["totalClaimed"], "3000");
    assert_eq!(
        payload["claims"][0]["voucher"]["maxClaimableAmount"],
        "3000"
    );
    assert_eq!(
        payload["claims"][0]["voucher"]["channel"]["withdrawDelay"],
        900
    );
    assert!(payload.get("claimAuthorizerSignature").is_none());
    assert_eq!(
        claim_payload(&rows[..1], Some("0xsig"))["claimAuthorizerSignature"],
        "0xsig"
    );
    let after = claimed(a.clone(), &rows[0]);
    assert_eq!(after.onchain.total_claimed, 3000);
    assert_eq!(after.unclaimed(), 0);
}

#[test]
fn records_read_back_as_written_and_mirrors_from_facilitator_answers() {
    let mut r = record(2000, 10_000, 5, Some(NOW));
    r.pending = Some(PendingRequest {
        id: "p".into(),
        signed_max_claimable: u128::MAX,
        expires_at_ms: NOW,
        created: true,
    });
    let text = r.to_json();
    assert!(
        text.contains("\"chargedCumulativeAmount\":\"2000\""),
        "{text}"
    );
    assert_eq!(ChannelRecord::from_json(&text).expect("reads"), r);
    let verify_extra = serde_json::json!({
        "channelId": CHANNEL, "balance": "9000", "totalClaimed": "10",
        "withdrawRequestedAt": 5, "refundNonce": "2",
    });
    assert_eq!(
        OnchainMirror::from_extra(&verify_extra),
        Some(OnchainMirror {
            balance: 9000,
            total_claimed: 10,
            withdraw_requested_at: 5,
            refund_nonce: 2
        })
    );
    let settle_extra = serde_json::json!({"channelState": {"balance": "7"}});
    assert_eq!(
        OnchainMirror::from_extra(&settle_extra).map(|m| m.balance),
        Some(7)
    );
    assert_eq!(OnchainMirror::from_extra(&serde_json::json!({})), None);
    assert_eq!(mirror_ttl_ms(900), 300_000);
    assert_eq!(mirror_ttl_ms(60), 30_000);
}

#[test]
fn a_refund_returns_what_was_not_charged_and_claims_what_was() {
    let r = record(3000, 10_000, 1000, Some(NOW));
    assert_eq!(refund_amount(&r, None), Ok(7000));
    assert_eq!(refund_amount(&r, Some("500")), Ok(500));
    for bad in ["0", "-1", "1.5", "", "x"] {
        assert_eq!(
            refund_amount(&r, Some(bad)).expect_err(bad).code,
            codes::REFUND_AMOUNT_INVALID
        );
    }
    assert_eq!(
        refund_amount(&record(3000, 3000, 0, Some(NOW)), None)
            .expect_err("spent")
            .code,
        codes::REFUND_NO_BALANCE
    );
    let mut refund = voucher(3000);
    refund.kind = PayloadKind::Refund;
    let buyer = serde_json::json!({"type": "refund", "channelConfig": config(), "voucher": {"channelId": CHANNEL}});
    let payload = refund_settle_payload(&buyer, &r, &refund, 7000, None).expect("payload");
    assert_eq!(payload["amount"], "7000");
    assert_eq!(payload["refundNonce"], "0");
    assert_eq!(payload["claims"][0]["totalClaimed"], "3000");
    assert_eq!(
        payload["claims"][0]["voucher"]["maxClaimableAmount"],
        "3000"
    );
    assert_eq!(payload["claims"][0]["signature"], SIGNED_3000);
    assert_eq!(payload["type"], "refund", "the buyer's own fields are kept");
    // A buyer's own amount stands; a channel claimed in full still carries its row (a no-op on
    // chain), as the facilitator requires one.
    let asked = serde_json::json!({"type": "refund", "amount": "5"});
    let claimed_in_full = record(3000, 10_000, 3000, Some(NOW));
    let payload =
        refund_settle_payload(&asked, &claimed_in_full, &refund, 5, None).expect("payload");
    assert_eq!(payload["amount"], "5");
    assert_eq!(payload["claims"][0]["totalClaimed"], "3000");
}

#[test]
fn after_a_refund_an_emptied_channel_is_forgotten_and_a_partial_one_mirrored() {
    let mut held = record(3000, 10_000, 0, Some(NOW - 1000));
    held.pending = Some(PendingRequest {
        id: "r".into(),
        signed_max_claimable: 3000,
        expires_at_ms: NOW + 1000,
        created: false,
    });
    let emptied = OnchainMirror {
        balance: 3000,
        total_claimed: 3000,
        withdraw_requested_at: 0,
        refund_nonce: 1,
    };
    assert_eq!(
        after_refund(Some(&held), "r", Some(emptied), NOW),
        Release::Delete
    );
    let partial = OnchainMirror {
        balance: 9000,
        ..emptied
    };
    match after_refund(Some(&held), "r", Some(partial), NOW) {
        Release::Write(next) => {
            assert_eq!(next.onchain, partial);
            assert_eq!(next.pending, None);
            assert_eq!(next.onchain_synced_at_ms, Some(NOW));
            assert_eq!(next.charged_cumulative_amount, 3000);
        }
        other => panic!("expected the channel kept, got {other:?}"),
    }
    match after_refund(Some(&held), "r", None, NOW) {
        Release::Write(next) => assert_eq!(next.onchain_synced_at_ms, None),
        other => panic!("expected the channel freed, got {other:?}"),
    }
    assert_eq!(
        after_refund(Some(&held), "other", Some(partial), NOW),
        Release::Untouched
    );
}

#[test]
fn the_upstream_may_charge_a_voucher_less_than_its_price_never_more() {
    assert_eq!(voucher_charge(1000, 6, None), Ok(1000));
    assert_eq!(
        voucher_charge(1000, 6, Some(r#"{"amount":"250"}"#)),
        Ok(250)
    );
    assert_eq!(
        voucher_charge(1000, 6, Some(r#"{"amount":"50%"}"#)),
        Ok(500)
    );
    assert_eq!(
        voucher_charge(1000, 6, Some(r#"{"amount":"$0.0001"}"#)),
        Ok(100)
    );
    assert_eq!(voucher_charge(1000, 6, Some(r#"{"amount":"0"}"#)), Ok(0));
    assert_eq!(
        voucher_charge(1000, 6, Some(r#"{"amount":"5000"}"#)),
        Ok(1000)
    );
    assert!(voucher_charge(1000, 6, Some("not json")).is_err());
}

#[test]
fn the_gateways_own_authorizer_signs_its_refunds_and_claims() {
    // Anvil's third key, as a seller's own receiver authorizer.
    let key = ReceiverAuthorizerKey::from_hex(
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    )
    .expect("key");
    assert_eq!(key.address(), AUTHORIZER);
    assert!(
        !format!("{key:?}").contains("5de4111a"),
        "the key is never printed"
    );
    assert_eq!(
        ReceiverAuthorizerKey::from_hex("0x1234").expect_err("short"),
        BadAuthorizerKey
    );
    let r = record(3000, 10_000, 1000, Some(NOW));
    let mut refund = voucher(3000);
    refund.kind = PayloadKind::Refund;
    let buyer = serde_json::json!({"type": "refund"});
    let payload =
        refund_settle_payload(&buyer, &r, &refund, 7000, Some((&key, CHAIN))).expect("payload");
    let refund_signature = payload["refundAuthorizerSignature"]
        .as_str()
        .expect("signed");
    assert_eq!(
        recover_signer(
            refund_signature,
            &refund_digest(refund.channel_id, 0, 7000, CHAIN)
        )
        .expect("recovers"),
        key.address
    );
    let row = ClaimRow {
        channel: CHANNEL.into(),
        config: config(),
        max_claimable: 3000,
        signature: SIGNED_3000.into(),
        total_claimed: 3000,
    };
    let claim_signature = payload["claimAuthorizerSignature"]
        .as_str()
        .expect("signed");
    assert_eq!(
        recover_signer(
            claim_signature,
            &claim_batch_digest(&[row], CHAIN).expect("digest")
        )
        .expect("recovers"),
        key.address
    );
}
