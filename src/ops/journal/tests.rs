use super::*;
use crate::facilitator::{FacilitatorError, FacilitatorRequest, Settlement};
use crate::payment::InMemoryReplayGuard;
use crate::x402::{SupportedResponse, VerifyResponse};

fn temp_journal() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "x402-journal-unit-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    dir.join("journal.jsonl")
}

fn entry(id: &str, state: PaymentState, tx: &str) -> JournalEntry {
    JournalEntry {
        time: rfc3339_now(),
        id: id.into(),
        state,
        route: "GET /paid".into(),
        payer: "0xabc".into(),
        amount: "10000".into(),
        asset: "0xasset".into(),
        network: "eip155:84532".into(),
        pay_to: "0xpayto".into(),
        transaction: tx.into(),
        facilitator: "test".into(),
        reason: String::new(),
        key: format!("eip155:84532|0xasset|0xabc|{id}"),
        valid_before: unix_now() + 600,
        settle_request: String::new(),
    }
}

/// A facilitator with a status API that reports every transaction as settled.
struct Confirms;

#[async_trait]
impl Facilitator for Confirms {
    fn name(&self) -> &str {
        "confirms"
    }
    async fn verify(&self, _: &FacilitatorRequest) -> Result<VerifyResponse, FacilitatorError> {
        Err(FacilitatorError::Unreachable("unused".into()))
    }
    async fn settle(&self, _: &FacilitatorRequest) -> Result<Settlement, FacilitatorError> {
        Err(FacilitatorError::Unreachable("unused".into()))
    }
    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        Err(FacilitatorError::Unreachable("unused".into()))
    }
    async fn settlement_status(
        &self,
        transaction: &str,
        _network: &str,
    ) -> Result<SettlementLookup, FacilitatorError> {
        Ok(SettlementLookup::Settled {
            transaction: transaction.into(),
        })
    }
}

#[tokio::test]
async fn appended_entries_are_read_back_and_a_torn_last_line_is_skipped() {
    let path = temp_journal();
    let (journal, existing) = FileJournal::open(&path).unwrap();
    assert!(existing.is_empty());
    journal
        .append(entry("a", PaymentState::Verified, ""))
        .await
        .unwrap();
    journal
        .append(entry("a", PaymentState::Settled, "0x01"))
        .await
        .unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(br#"{"time":"2026-01-01T00:00:00.000Z","id":"b","sta"#)
        .unwrap();
    let entries = read_entries(&path).unwrap();
    assert_eq!(entries.len(), 2);
    let latest = latest_states(&entries);
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].state, PaymentState::Settled);
    assert_eq!(latest[0].transaction, "0x01");
}

#[tokio::test]
async fn resume_turns_interrupted_payments_into_pending_and_refuses_their_replay() {
    let path = temp_journal();
    let (journal, _) = FileJournal::open(&path).unwrap();
    journal
        .append(entry("x", PaymentState::Verified, ""))
        .await
        .unwrap();
    journal
        .append(entry("y", PaymentState::Settled, "0x02"))
        .await
        .unwrap();
    drop(journal);

    let (journal, entries) = FileJournal::open(&path).unwrap();
    let replay = InMemoryReplayGuard::new();
    let resumed = resume(journal.as_ref(), &entries, &replay).await.unwrap();
    assert_eq!(resumed, 1);
    assert_eq!(journal.pending().len(), 1);
    assert_eq!(
        journal.pending()[0].reason,
        "interrupted_before_final_state"
    );
    for id in ["x", "y"] {
        let key = ReplayKey::from_recorded(&format!("eip155:84532|0xasset|0xabc|{id}"));
        assert!(replay
            .reserve(&key, unix_now() + 600, unix_now())
            .await
            .is_err());
    }
}

#[tokio::test]
async fn reconciliation_appends_the_final_state_of_a_pending_settlement() {
    let path = temp_journal();
    let (journal, _) = FileJournal::open(&path).unwrap();
    journal
        .append(entry("p", PaymentState::Pending, "0x03"))
        .await
        .unwrap();
    journal
        .append(entry("q", PaymentState::Pending, ""))
        .await
        .unwrap();
    let confirms: std::sync::Arc<dyn Facilitator> = std::sync::Arc::new(Confirms);
    reconcile_once(journal.as_ref(), &|_| Some(confirms.clone())).await;
    let latest = latest_states(&read_entries(&path).unwrap());
    let p = latest.iter().find(|e| e.id == "p").unwrap();
    let q = latest.iter().find(|e| e.id == "q").unwrap();
    assert_eq!(p.state, PaymentState::Settled);
    assert_eq!(
        q.state,
        PaymentState::Pending,
        "no transaction to ask about"
    );
    assert_eq!(journal.pending().len(), 1);
}

#[tokio::test]
async fn a_pending_payment_whose_answer_was_cut_stays_a_refund_candidate_once_settled() {
    let path = temp_journal();
    let (journal, _) = FileJournal::open(&path).unwrap();
    let pending = entry("cut", PaymentState::Pending, "0x04");
    journal.append(pending.clone()).await.unwrap();
    let mut cut = pending.next(PaymentState::Pending);
    cut.reason = crate::payment::BODY_CUT.into();
    journal.append(cut).await.unwrap();
    journal
        .append(entry("whole", PaymentState::Pending, "0x05"))
        .await
        .unwrap();
    let confirms: std::sync::Arc<dyn Facilitator> = std::sync::Arc::new(Confirms);
    reconcile_once(journal.as_ref(), &|_| Some(confirms.clone())).await;
    let latest = latest_states(&read_entries(&path).unwrap());
    let cut = latest.iter().find(|e| e.id == "cut").unwrap();
    assert_eq!(cut.state, PaymentState::Settled);
    assert_eq!(cut.reason, crate::payment::BODY_CUT);
    let whole = latest.iter().find(|e| e.id == "whole").unwrap();
    assert_eq!(whole.state, PaymentState::Settled);
    assert_eq!(whole.reason, "", "nothing to refund on a whole answer");
}

#[test]
fn times_round_trip_and_since_accepts_the_usual_forms() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
    assert_eq!(
        parse_rfc3339("2026-01-01T00:00:00.123Z"),
        Some(1_767_225_600_123)
    );
    assert_eq!(parse_rfc3339("2026-01-01"), Some(1_767_225_600_000));
    assert_eq!(
        parse_rfc3339("2024-02-29T12:30:00Z"),
        Some(1_709_209_800_000)
    );
    assert_eq!(parse_since("1767225600", 0), Ok(1_767_225_600_000));
    assert_eq!(parse_since("1h", 7_200_000), Ok(3_600_000));
    assert!(parse_since("yesterday", 0).is_err());
    assert_eq!(parse_rfc3339("2026-13-01"), None);
}

#[test]
fn receipts_filter_by_route_payer_state_and_time() {
    use crate::ops::receipts::{receipts, ReceiptQuery};
    let mut other_route = entry("b", PaymentState::Verified, "");
    other_route.route = "POST /upload".into();
    other_route.payer = "0xDEF".into();
    let entries = vec![
        entry("a", PaymentState::Verified, ""),
        other_route.clone(),
        entry("a", PaymentState::Settled, "0x1"),
        other_route.next(PaymentState::Pending),
    ];
    let ids = |q: ReceiptQuery| -> Vec<String> {
        receipts(&entries, &q).into_iter().map(|e| e.id).collect()
    };
    assert_eq!(ids(ReceiptQuery::default()), ["a", "b"]);
    let route = ReceiptQuery {
        route: Some("POST /upload".into()),
        ..Default::default()
    };
    assert_eq!(ids(route), ["b"]);
    let payer = ReceiptQuery {
        payer: Some("0xdef".into()),
        ..Default::default()
    };
    assert_eq!(ids(payer), ["b"], "any case");
    let state = ReceiptQuery {
        state: Some(PaymentState::Settled),
        ..Default::default()
    };
    assert_eq!(ids(state), ["a"], "by the latest state");
    let verified = ReceiptQuery {
        state: Some(PaymentState::Verified),
        ..Default::default()
    };
    assert!(ids(verified).is_empty());
    let future = ReceiptQuery {
        since_ms: Some(parse_rfc3339("2999-01-01").unwrap()),
        ..Default::default()
    };
    assert!(ids(future).is_empty());
}

#[test]
fn receipts_list_settled_payments_whose_answer_was_cut_as_refund_candidates() {
    use crate::ops::receipts::{receipts, ReceiptQuery};
    use crate::payment::{BODY_CUT, BODY_INCOMPLETE};
    let mut cut = entry("cut", PaymentState::Settled, "0x1").next(PaymentState::Settled);
    cut.reason = BODY_CUT.into();
    let mut incomplete = entry("incomplete", PaymentState::NotCharged, "");
    incomplete.reason = BODY_INCOMPLETE.into();
    let entries = vec![
        entry("cut", PaymentState::Verified, ""),
        entry("whole", PaymentState::Verified, ""),
        entry("cut", PaymentState::Settled, "0x1"),
        entry("whole", PaymentState::Settled, "0x2"),
        cut,
        entry("incomplete", PaymentState::Verified, ""),
        incomplete,
    ];
    let all: Vec<(String, String)> = receipts(&entries, &ReceiptQuery::default())
        .into_iter()
        .map(|e| (e.id, e.reason))
        .collect();
    assert!(all.contains(&("cut".into(), BODY_CUT.into())), "{all:?}");
    let candidates: Vec<String> = receipts(
        &entries,
        &ReceiptQuery {
            refund_candidates: true,
            ..Default::default()
        },
    )
    .into_iter()
    .map(|e| e.id)
    .collect();
    // Nothing moved for the incomplete answer: not a refund candidate.
    assert_eq!(candidates, ["cut"]);
}

#[test]
fn receipts_read_as_pages_run_newest_first_from_where_the_last_page_ended() {
    use crate::ops::receipts::{receipt_rows, Page, ReceiptQuery};
    let entries: Vec<JournalEntry> = ["a", "b", "c", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut e = entry(id, PaymentState::Settled, "0x1");
            e.time = crate::time::rfc3339(1_780_000_000_000 + i as i64 * (i as i64 % 2));
            e
        })
        .collect();
    let page = |after: Option<(String, String)>, limit| -> Vec<String> {
        let query = ReceiptQuery {
            page: Some(Page { after, limit }),
            ..Default::default()
        };
        receipt_rows(&entries, &query)
            .into_iter()
            .map(|r| r.entry.id)
            .collect()
    };
    // b (+1 ms) and d (+3 ms) are newest; a, c and e share a time and go by id, descending.
    assert_eq!(page(None, 10), ["d", "b", "e", "c", "a"]);
    assert_eq!(page(None, 2), ["d", "b"]);
    let after_b = (crate::time::rfc3339(1_780_000_000_001), "b".to_string());
    assert_eq!(page(Some(after_b), 2), ["e", "c"]);
    let after_c = (crate::time::rfc3339(1_780_000_000_000), "c".to_string());
    assert_eq!(page(Some(after_c), 2), ["a"]);
}

#[test]
fn payment_states_read_back_from_their_names() {
    for state in PaymentState::ALL {
        assert_eq!(PaymentState::parse(state.as_str()), Some(state));
    }
    assert_eq!(PaymentState::parse("charged"), None);
}

/// A facilitator without a status API that answers every resent settle request with `answer`.
struct Resettles {
    answer: serde_json::Value,
    finality: crate::payment::Finality,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Facilitator for Resettles {
    fn name(&self) -> &str {
        "resettles"
    }
    async fn verify(&self, _: &FacilitatorRequest) -> Result<VerifyResponse, FacilitatorError> {
        Err(FacilitatorError::Unreachable("unused".into()))
    }
    async fn settle(&self, _: &FacilitatorRequest) -> Result<Settlement, FacilitatorError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Settlement {
            response: serde_json::from_value(self.answer.clone())
                .map_err(|e| FacilitatorError::Garbage(e.to_string()))?,
            raw: self.answer.clone(),
            status: self.finality,
        })
    }
    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        Err(FacilitatorError::Unreachable("unused".into()))
    }
}

#[tokio::test]
async fn a_resent_settlement_is_judged_like_the_first_and_only_a_confirmed_match_closes_it() {
    use crate::payment::Finality;
    use serde_json::json;
    let mut pending = entry("r", PaymentState::Pending, "");
    pending.settle_request = json!({
        "x402Version": 2,
        "paymentPayload": {"payload": {}},
        "paymentRequirements": {"network": "eip155:84532", "amount": "10000"},
    })
    .to_string();
    let ok = |extra: serde_json::Value| {
        let mut answer = json!({"success": true, "payer": "0xABC", "transaction": "0x0a",
            "network": "eip155:84532", "amount": "10000"});
        if let (Some(a), Some(e)) = (answer.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        answer
    };
    // (answer, finality, whether the entry is closed as settled)
    let cases = [
        (ok(json!({})), Finality::Confirmed, true),
        (ok(json!({})), Finality::Pending, false),
        (ok(json!({})), Finality::Batched, false),
        // A success that is not this payment's settlement never closes it.
        (ok(json!({"payer": "0xdef"})), Finality::Confirmed, false),
        (ok(json!({"amount": "1"})), Finality::Confirmed, false),
        (
            ok(json!({"network": "eip155:1"})),
            Finality::Confirmed,
            false,
        ),
        (
            json!({"success": false, "errorReason": "settlement_pending", "transaction": "0x0a", "network": ""}),
            Finality::Confirmed,
            false,
        ),
        // Refused on resend: the first attempt may have settled, so it stays open.
        (
            json!({"success": false, "errorReason": "invalid_nonce", "transaction": "", "network": ""}),
            Finality::Confirmed,
            false,
        ),
        (
            json!({"success": false, "errorReason": "onchain_error", "status": "failed", "transaction": "0x0a", "network": ""}),
            Finality::Confirmed,
            false,
        ),
    ];
    for (answer, finality, closes) in cases {
        let facilitator = std::sync::Arc::new(Resettles {
            answer: answer.clone(),
            finality,
            calls: std::sync::atomic::AtomicUsize::new(0),
        });
        let as_dyn: std::sync::Arc<dyn Facilitator> = facilitator.clone();
        let next = check_pending(&pending, &|_| Some(as_dyn.clone())).await;
        assert_eq!(
            facilitator.calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{answer}"
        );
        match next {
            Some(next) => {
                assert!(closes, "closed by {answer} ({finality:?})");
                assert_eq!(next.state, PaymentState::Settled);
                assert_eq!(next.transaction, "0x0a");
            }
            None => assert!(!closes, "left open by {answer} ({finality:?})"),
        }
    }
}

#[test]
fn a_resend_verdict_maps_to_the_lookup_reconciliation_counts() {
    use crate::payment::{Finality, SettleOutcome, SettleVerdict};
    let verdict = |outcome| SettleVerdict {
        outcome,
        transaction: "0x0b".into(),
        answer_is_receipt: false,
    };
    assert_eq!(
        resent_lookup(verdict(SettleOutcome::Settled(Finality::Confirmed))),
        SettlementLookup::Settled {
            transaction: "0x0b".into()
        }
    );
    for finality in [Finality::Pending, Finality::Batched] {
        assert_eq!(
            resent_lookup(verdict(SettleOutcome::Settled(finality))),
            SettlementLookup::Pending
        );
    }
    assert_eq!(
        resent_lookup(verdict(SettleOutcome::Unknown {
            detail: "settlement_pending".into()
        })),
        SettlementLookup::Pending
    );
    for outcome in [
        SettleOutcome::Unknown {
            detail: "payment_processing".into(),
        },
        SettleOutcome::Refused {
            reason: "invalid_nonce".into(),
        },
        SettleOutcome::NotSent(crate::payment::Failure::FacilitatorUnavailable),
    ] {
        assert_eq!(resent_lookup(verdict(outcome)), SettlementLookup::Unknown);
    }
}

#[test]
fn the_file_journal_last_line_agrees_with_the_state_table_for_every_transition_written() {
    use crate::payment::lifecycle::tests::journal_transitions;
    let transitions = journal_transitions();
    assert!(transitions.len() >= 11, "{transitions:?}");
    for (current, next) in transitions {
        let mut entries: Vec<JournalEntry> =
            current.map(|c| entry("t", c, "")).into_iter().collect();
        let mut line = entry("t", next, "");
        line.reason = "the last line".into();
        entries.push(line);
        let latest = latest_states(&entries);
        assert_eq!(latest.len(), 1);
        assert_eq!(
            latest[0].state,
            PaymentState::after(current, next, false),
            "{current:?} then {next:?}"
        );
        assert_eq!(latest[0].reason, "the last line");
    }
}
