use super::*;
use crate::payment::{BODY_CUT, BODY_INCOMPLETE};
use SettlementPolicy::{AfterSuccess, Before};

fn events() -> Vec<Event> {
    vec![
        Event::Accepted,
        Event::VerifyRefused {
            reason: "insufficient_funds".into(),
        },
        Event::VerifyFailed(Failure::FacilitatorTimeout),
        Event::JournalFailed,
        Event::RecordedElsewhere { settled: false },
        Event::RecordedElsewhere { settled: true },
        Event::UpstreamAnswered { status: 100 },
        Event::UpstreamAnswered { status: 103 },
        Event::UpstreamAnswered { status: 101 },
        Event::UpstreamAnswered { status: 200 },
        Event::UpstreamAnswered { status: 304 },
        Event::UpstreamAnswered { status: 404 },
        Event::UpstreamAnswered { status: 500 },
        Event::UpstreamFailed,
        Event::UpstreamBodyCut,
        Event::ResultFailed {
            reason: "tool_error".into(),
        },
        Event::SettleAnswered(SettleOutcome::Settled(Finality::Confirmed)),
        Event::SettleAnswered(SettleOutcome::Settled(Finality::Pending)),
        Event::SettleAnswered(SettleOutcome::Settled(Finality::Batched)),
        Event::SettleAnswered(SettleOutcome::Refused {
            reason: "insufficient_funds".into(),
        }),
        Event::SettleAnswered(SettleOutcome::NotSent(Failure::FacilitatorUnavailable)),
        Event::SettleAnswered(SettleOutcome::Unknown {
            detail: "facilitator_error".into(),
        }),
        Event::MeteredAnswered {
            status: 200,
            charge: MeteredCharge {
                amount: 0,
                basis: ChargeBasis::Reported,
            },
        },
        Event::MeteredAnswered {
            status: 200,
            charge: MeteredCharge {
                amount: 500,
                basis: ChargeBasis::Capped,
            },
        },
        Event::MeteredAnswered {
            status: 500,
            charge: MeteredCharge {
                amount: 500,
                basis: ChargeBasis::Reported,
            },
        },
        Event::Ended,
    ]
}

/// Every stage reachable under `policy`, each with the lifecycle that is in it.
fn reachable(policy: SettlementPolicy) -> Vec<Lifecycle> {
    let mut seen: Vec<Lifecycle> = vec![Lifecycle::new(policy)];
    let mut i = 0;
    while i < seen.len() {
        for event in events() {
            let mut next = seen[i].clone();
            next.on(event);
            if !seen.contains(&next) {
                seen.push(next);
            }
        }
        i += 1;
    }
    seen
}

fn run(policy: SettlementPolicy, events: Vec<Event>) -> (Lifecycle, Vec<Decision>) {
    let mut life = Lifecycle::new(policy);
    let decisions = events.into_iter().map(|e| life.on(e)).collect();
    (life, decisions)
}

fn settled(f: Finality) -> Event {
    Event::SettleAnswered(SettleOutcome::Settled(f))
}

fn unknown() -> Event {
    Event::SettleAnswered(SettleOutcome::Unknown {
        detail: "facilitator_timeout".into(),
    })
}

#[test]
fn after_success_settles_only_on_a_final_success_and_delivers_with_the_receipt() {
    let (life, d) = run(
        AfterSuccess,
        vec![
            Event::Accepted,
            Event::UpstreamAnswered { status: 100 },
            Event::UpstreamAnswered { status: 103 },
            Event::UpstreamAnswered { status: 200 },
            settled(Finality::Confirmed),
            Event::Ended,
        ],
    );
    assert_eq!(d[0].answer, Answer::Forward);
    assert_eq!(d[0].journal, Some((PaymentState::Verified, String::new())));
    assert_eq!(
        d[1].answer,
        Answer::Nothing,
        "100 Continue is not an answer"
    );
    assert_eq!(
        d[2].answer,
        Answer::Nothing,
        "103 Early Hints is not an answer"
    );
    assert_eq!(d[3].answer, Answer::Settle);
    assert_eq!(d[4].answer, Answer::Deliver);
    assert_eq!(d[4].reservation, Reservation::Burn);
    assert_eq!(d[4].journal, Some((PaymentState::Settled, String::new())));
    assert_eq!(d[4].outcome, Some(Outcome::Paid));
    assert_eq!(d[5], Decision::new(Answer::Nothing));
    assert_eq!(life.stage(), &Stage::Settled(Finality::Confirmed));
    assert!(life.settle_attempted());
}

#[test]
fn switching_protocols_is_a_success_settled_before_the_tunnel() {
    let (life, d) = run(
        AfterSuccess,
        vec![Event::Accepted, Event::UpstreamAnswered { status: 101 }],
    );
    assert_eq!(d[1].answer, Answer::Settle);
    assert_eq!(life.stage(), &Stage::Settling);
}

#[test]
fn a_failed_upstream_after_informational_responses_is_not_charged() {
    let (life, d) = run(
        AfterSuccess,
        vec![
            Event::Accepted,
            Event::UpstreamAnswered { status: 100 },
            Event::UpstreamAnswered { status: 500 },
            Event::Ended,
        ],
    );
    assert_eq!(d[2].answer, Answer::Deliver);
    assert_eq!(d[2].reservation, Reservation::Release);
    assert_eq!(
        d[2].journal,
        Some((PaymentState::NotCharged, "upstream_status_500".into()))
    );
    assert_eq!(d[2].outcome, Some(Outcome::NotCharged));
    assert_eq!(d[3], Decision::new(Answer::Nothing));
    assert_eq!(life.stage(), &Stage::NotCharged);
    assert!(!life.settle_attempted());
}

#[test]
fn pending_and_batched_settlements_are_served_and_journaled_pending() {
    for f in [Finality::Pending, Finality::Batched] {
        let (_, d) = run(
            AfterSuccess,
            vec![
                Event::Accepted,
                Event::UpstreamAnswered { status: 200 },
                settled(f),
            ],
        );
        assert_eq!(d[2].answer, Answer::Deliver);
        assert_eq!(d[2].journal, Some((PaymentState::Pending, String::new())));
        assert_eq!(d[2].reservation, Reservation::Burn);
    }
}

#[test]
fn an_unknown_outcome_keeps_a_tombstone_and_answers_504_with_the_receipt() {
    for policy in [AfterSuccess, Before] {
        let mut events = vec![Event::Accepted];
        if policy == AfterSuccess {
            events.push(Event::UpstreamAnswered { status: 200 });
        }
        events.push(unknown());
        let (life, d) = run(policy, events);
        let last = d.last().unwrap();
        assert_eq!(last.reservation, Reservation::Tombstone);
        assert_eq!(
            last.journal,
            Some((PaymentState::Pending, "facilitator_timeout".into()))
        );
        assert_eq!(
            last.answer,
            Answer::Fail {
                failure: Failure::SettlementUnconfirmed,
                receipt: true
            }
        );
        assert_eq!(Failure::SettlementUnconfirmed.status(), 504);
        assert_ne!(Failure::SettlementUnconfirmed.status(), 402);
        assert_eq!(life.stage(), &Stage::Unknown);
    }
}

#[test]
fn a_refused_settlement_releases_and_says_why() {
    let (life, d) = run(
        AfterSuccess,
        vec![
            Event::Accepted,
            Event::UpstreamAnswered { status: 200 },
            Event::SettleAnswered(SettleOutcome::Refused {
                reason: "insufficient_funds".into(),
            }),
        ],
    );
    assert_eq!(
        d[2].answer,
        Answer::SettleRefused {
            reason: "insufficient_funds".into()
        }
    );
    assert_eq!(d[2].reservation, Reservation::Release);
    assert_eq!(
        d[2].journal,
        Some((PaymentState::Failed, "insufficient_funds".into()))
    );
    assert_eq!(life.stage(), &Stage::Refused);
}

#[test]
fn settle_before_settles_first_and_sends_the_receipt_whatever_the_upstream_does() {
    let (_, d) = run(
        Before,
        vec![
            Event::Accepted,
            settled(Finality::Confirmed),
            Event::UpstreamAnswered { status: 100 },
            Event::UpstreamAnswered { status: 500 },
        ],
    );
    assert_eq!(d[0].answer, Answer::Settle);
    assert_eq!(d[0].journal, Some((PaymentState::Verified, String::new())));
    assert_eq!(d[1].answer, Answer::Forward);
    assert_eq!(d[2].answer, Answer::Nothing);
    assert_eq!(d[3].answer, Answer::Deliver);
    assert_eq!(
        d[3].journal,
        Some((PaymentState::Settled, "upstream_status_500".into()))
    );
    assert_eq!(d[3].reservation, Reservation::Keep);

    let (_, d) = run(
        Before,
        vec![
            Event::Accepted,
            settled(Finality::Pending),
            Event::UpstreamFailed,
        ],
    );
    assert_eq!(d[2].answer, Answer::UpstreamError { receipt: true });
    assert_eq!(
        d[2].journal,
        Some((PaymentState::Pending, "upstream_failed".into()))
    );
}

#[test]
fn a_held_answer_broken_off_before_it_is_whole_is_not_charged_and_may_be_retried() {
    let (life, d) = run(
        AfterSuccess,
        vec![Event::Accepted, Event::UpstreamBodyCut, Event::Ended],
    );
    assert_eq!(d[1].answer, Answer::UpstreamError { receipt: false });
    assert_eq!(d[1].reservation, Reservation::Release);
    assert_eq!(
        d[1].journal,
        Some((PaymentState::NotCharged, BODY_INCOMPLETE.into()))
    );
    assert_eq!(d[1].outcome, Some(Outcome::NotCharged));
    assert_eq!(d[2], Decision::new(Answer::Nothing));
    assert_eq!(life.stage(), &Stage::NotCharged);
    assert!(!life.settle_attempted(), "never settled");
    assert_eq!(life.identifier_end(false), IdentifierEnd::Abandon);
}

#[test]
fn a_stream_broken_off_after_settlement_is_journaled_as_cut_on_the_settled_payment() {
    for (f, state) in [
        (Finality::Confirmed, PaymentState::Settled),
        (Finality::Pending, PaymentState::Pending),
    ] {
        let (life, d) = run(
            AfterSuccess,
            vec![
                Event::Accepted,
                Event::UpstreamAnswered { status: 200 },
                settled(f),
                Event::UpstreamBodyCut,
                Event::UpstreamFailed,
                Event::Ended,
            ],
        );
        assert_eq!(d[3].answer, Answer::UpstreamError { receipt: true });
        assert_eq!(d[3].reservation, Reservation::Keep, "the money moved");
        assert_eq!(d[3].journal, Some((state, BODY_CUT.into())));
        assert_eq!(d[3].outcome, None, "still counted paid");
        assert!(crate::payment::is_refund_candidate(state, BODY_CUT));
        // Told once: a later failure of the same answer writes nothing more.
        assert_eq!(d[4].journal, None);
        assert_eq!(life.stage(), &Stage::Settled(f));
        assert_eq!(life.outcome(), Some(Outcome::Paid));
    }
}

#[test]
fn settled_up_front_a_cut_body_is_an_upstream_failure_as_before() {
    let (_, d) = run(
        Before,
        vec![
            Event::Accepted,
            settled(Finality::Confirmed),
            Event::UpstreamBodyCut,
        ],
    );
    assert_eq!(d[2].answer, Answer::UpstreamError { receipt: true });
    assert_eq!(
        d[2].journal,
        Some((PaymentState::Settled, "upstream_failed".into()))
    );
}

#[test]
fn verification_refusals_and_failures_release_without_a_journal_line() {
    let (_, d) = run(
        AfterSuccess,
        vec![Event::VerifyRefused {
            reason: "insufficient_funds".into(),
        }],
    );
    assert_eq!(
        d[0].answer,
        Answer::Challenge {
            reason: "insufficient_funds".into()
        }
    );
    assert_eq!(d[0].reservation, Reservation::Release);
    assert_eq!(d[0].journal, None);
    let (_, d) = run(
        AfterSuccess,
        vec![Event::VerifyFailed(Failure::FacilitatorError)],
    );
    assert_eq!(d[0].reservation, Reservation::Release);
    assert_eq!(d[0].outcome, Some(Outcome::Error));
}

#[test]
fn a_journal_failure_charges_nothing_under_either_policy() {
    for policy in [AfterSuccess, Before] {
        let (life, d) = run(policy, vec![Event::Accepted, Event::JournalFailed]);
        assert_eq!(d[1].reservation, Reservation::Release);
        assert_eq!(
            d[1].answer,
            Answer::Fail {
                failure: Failure::JournalUnavailable,
                receipt: false
            }
        );
        assert_eq!(life.stage(), &Stage::NotCharged);
    }
}

#[test]
fn an_authorization_another_replica_recorded_is_refused_and_our_reservation_follows_its_state() {
    for policy in [AfterSuccess, Before] {
        for settled in [false, true] {
            let (life, d) = run(
                policy,
                vec![Event::Accepted, Event::RecordedElsewhere { settled }],
            );
            assert_eq!(d[1].answer, Answer::Duplicate { settled });
            // In flight elsewhere it may yet be freed; settled there, it is refused here too.
            let kept = if settled {
                Reservation::Burn
            } else {
                Reservation::Release
            };
            assert_eq!(d[1].reservation, kept);
            assert_eq!(d[1].journal, None);
            assert_eq!(life.stage(), &Stage::Refused);
            assert!(!matches!(d[1].answer, Answer::Settle));
        }
    }
}

#[test]
fn a_request_ending_mid_settlement_keeps_a_tombstone() {
    let (_, d) = run(Before, vec![Event::Accepted, Event::Ended]);
    assert_eq!(d[1].reservation, Reservation::Tombstone);
    assert_eq!(
        d[1].journal.as_ref().map(|j| j.0),
        Some(PaymentState::Pending)
    );
}

/// Every event in every reachable stage, under both policies: the money rules hold everywhere.
#[test]
fn the_whole_table_keeps_the_money_rules() {
    for policy in [AfterSuccess, Before] {
        let stages = reachable(policy);
        assert!(stages.len() >= 7, "{policy:?}: {stages:?}");
        for from in &stages {
            for event in events() {
                let mut life = from.clone();
                let d = life.on(event.clone());
                let case = format!(
                    "{policy:?} {:?} + {event:?} -> {:?}: {d:?}",
                    from.stage(),
                    life.stage()
                );
                let terminal = matches!(
                    from.stage(),
                    Stage::Refused | Stage::NotCharged | Stage::Unknown
                );
                if terminal {
                    assert_eq!(d, Decision::new(Answer::Nothing), "{case}");
                    assert_eq!(life.stage(), from.stage(), "{case}");
                }
                // Money that moved or may have moved is never released.
                if matches!(from.stage(), Stage::Settled(_) | Stage::Unknown) {
                    assert_ne!(d.reservation, Reservation::Release, "{case}");
                }
                // Burning happens exactly where money moved, a tombstone where it may have.
                // (A metered request that used nothing is served and moves nothing, but its
                // authorization, which Permit2 would still honour, is spent all the same; an
                // authorization the journal holds as settled by another request moved money
                // there, and is refused here.)
                let settled_elsewhere = matches!(event, Event::RecordedElsewhere { settled: true });
                if d.reservation == Reservation::Burn && settled_elsewhere {
                    assert_eq!(life.stage(), &Stage::Refused, "{case}");
                } else if d.reservation == Reservation::Burn {
                    assert!(matches!(life.stage(), Stage::Settled(_)), "{case}");
                    let nothing_used = matches!(
                        &event,
                        Event::MeteredAnswered { charge, .. } if !charge.settles()
                    );
                    if nothing_used {
                        assert_eq!(from.stage(), &Stage::Verified, "{case}");
                    } else {
                        assert_eq!(from.stage(), &Stage::Settling, "{case}");
                    }
                }
                if d.reservation == Reservation::Tombstone {
                    assert_eq!(life.stage(), &Stage::Unknown, "{case}");
                    assert_eq!(from.stage(), &Stage::Settling, "{case}");
                }
                if life.stage() == &Stage::Unknown && from.stage() != &Stage::Unknown {
                    assert_eq!(d.reservation, Reservation::Tombstone, "{case}");
                }
                // An unknown outcome is never answered 402 and always names its transaction.
                if life.stage() == &Stage::Unknown && from.stage() != &Stage::Unknown {
                    assert!(
                        matches!(
                            d.answer,
                            Answer::Nothing
                                | Answer::Fail {
                                    failure: Failure::SettlementUnconfirmed,
                                    receipt: true
                                }
                        ),
                        "{case}"
                    );
                    assert_eq!(
                        d.journal.as_ref().map(|j| j.0),
                        Some(PaymentState::Pending),
                        "{case}"
                    );
                }
                // Settlement is asked for at most once per payment.
                if d.answer == Answer::Settle {
                    assert!(!from.settle_attempted(), "{case}");
                }
                // Informational responses never move a payment on.
                if let Event::UpstreamAnswered { status } = event {
                    if !is_final_status(status) {
                        assert_eq!(life.stage(), from.stage(), "{case}");
                        assert_eq!(d.journal, None, "{case}");
                    }
                }
                // After-success never settles on a failed upstream.
                if policy == AfterSuccess {
                    if let Event::UpstreamAnswered { status } = event {
                        if status >= 400 {
                            assert_ne!(d.answer, Answer::Settle, "{case}");
                        }
                    }
                }
                // Up-front settlement: every answer after the money moved carries the receipt.
                if policy == Before && matches!(from.stage(), Stage::Settled(_)) {
                    assert!(
                        matches!(
                            d.answer,
                            Answer::Nothing
                                | Answer::Deliver
                                | Answer::UpstreamError { receipt: true }
                        ),
                        "{case}"
                    );
                }
            }
        }
    }
}

#[test]
fn failures_have_fixed_client_texts_and_codes() {
    for f in [
        Failure::FacilitatorTimeout,
        Failure::FacilitatorUnavailable,
        Failure::FacilitatorError,
        Failure::FacilitatorBadResponse,
        Failure::FacilitatorCredentials,
        Failure::FacilitatorRateLimited,
        Failure::SettlementUnconfirmed,
        Failure::JournalUnavailable,
    ] {
        assert!(f
            .code()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_'));
        assert!(!f.message().is_empty());
        assert_ne!(f.status(), 402, "{f:?}");
    }
}

mod metered {
    use super::super::*;

    const MAX: u128 = 100_000; // 0.10 of a 6-decimal token
    const PER_TOKEN: Meter = Meter::PerUnit { unit_amount: 20 }; // $0.00002

    fn charge(meter: Meter, fallback: UsageFallback, reported: Option<&str>) -> MeteredCharge {
        metered_charge(meter, MAX, fallback, reported)
    }

    #[test]
    fn usage_within_the_maximum_is_charged_as_reported() {
        let charged = charge(PER_TOKEN, UsageFallback::Maximum, Some("1500"));
        assert_eq!(charged.amount, 30_000);
        assert_eq!(charged.basis, ChargeBasis::Reported);
        assert!(charged.settles());
        let absolute = charge(Meter::Absolute, UsageFallback::Maximum, Some(" 30000 "));
        assert_eq!(absolute.amount, 30_000);
    }

    #[test]
    fn usage_above_the_maximum_is_capped() {
        let charged = charge(PER_TOKEN, UsageFallback::Nothing, Some("5001"));
        assert_eq!((charged.amount, charged.basis), (MAX, ChargeBasis::Capped));
        let overflow = charge(
            PER_TOKEN,
            UsageFallback::Nothing,
            Some(&u128::MAX.to_string()),
        );
        assert_eq!(
            (overflow.amount, overflow.basis),
            (MAX, ChargeBasis::Capped)
        );
        let exactly = charge(Meter::Absolute, UsageFallback::Nothing, Some("100000"));
        assert_eq!(
            (exactly.amount, exactly.basis),
            (MAX, ChargeBasis::Reported)
        );
    }

    #[test]
    fn zero_usage_settles_nothing() {
        let charged = charge(PER_TOKEN, UsageFallback::Maximum, Some("0"));
        assert_eq!(charged.amount, 0);
        assert_eq!(charged.basis, ChargeBasis::Reported);
        assert!(!charged.settles());
    }

    #[test]
    fn missing_or_malformed_usage_follows_the_fallback() {
        for reported in [
            None,
            Some(""),
            Some("-3"),
            Some("1.5"),
            Some("12abc"),
            Some("9".repeat(60).as_str()),
        ] {
            let maximum = charge(PER_TOKEN, UsageFallback::Maximum, reported);
            assert_eq!(maximum.amount, MAX, "{reported:?}");
            assert!(matches!(
                maximum.basis,
                ChargeBasis::Fallback {
                    fallback: UsageFallback::Maximum,
                    ..
                }
            ));
            let nothing = charge(PER_TOKEN, UsageFallback::Nothing, reported);
            assert_eq!(nothing.amount, 0, "{reported:?}");
            assert!(!nothing.settles());
        }
    }

    #[test]
    fn the_fallback_names_the_problem() {
        let charged = charge(Meter::Absolute, UsageFallback::Nothing, Some("lots"));
        match charged.basis {
            ChargeBasis::Fallback { problem, .. } => assert!(problem.contains("lots"), "{problem}"),
            other => panic!("expected a fallback, got {other:?}"),
        }
    }
}

#[test]
fn a_failed_result_charges_nothing_after_success_and_is_journaled_when_settled_up_front() {
    let failed = || Event::ResultFailed {
        reason: "tool_error".into(),
    };
    let mut life = Lifecycle::new(AfterSuccess);
    life.on(Event::Accepted);
    let decision = life.on(failed());
    assert_eq!(decision.answer, Answer::Deliver);
    assert_eq!(decision.reservation, Reservation::Release);
    assert_eq!(
        decision.journal,
        Some((PaymentState::NotCharged, "tool_error".into()))
    );
    assert!(!life.settle_attempted());

    let mut life = Lifecycle::new(Before);
    life.on(Event::Accepted);
    life.on(Event::SettleAnswered(SettleOutcome::Settled(
        Finality::Confirmed,
    )));
    let decision = life.on(failed());
    assert_eq!(decision.answer, Answer::Deliver);
    assert_eq!(
        decision.journal,
        Some((PaymentState::Settled, "tool_error".into()))
    );
}

#[test]
fn the_order_of_payment_states_is_one_table() {
    use PaymentState::{Failed as F, NotCharged as N, Pending as P, Settled as S, Verified as V};
    use Succession::{Kept as K, Replaces as R, ReplacesUnlessOlder as O};
    // Rows: the recorded state (none first); columns: the record's state, in `ALL`'s order
    // (verified, settled, pending, failed, not_charged).
    let table: [(Option<PaymentState>, [Succession; 5]); 6] = [
        (None, [R, R, R, R, R]),
        (Some(V), [K, O, O, O, O]),
        (Some(S), [K, O, K, K, K]),
        (Some(P), [K, R, R, R, R]),
        (Some(F), [R, K, K, K, K]),
        (Some(N), [R, K, K, K, K]),
    ];
    for (current, row) in table {
        for (next, expected) in PaymentState::ALL.into_iter().zip(row) {
            assert_eq!(
                PaymentState::succession(current, next),
                expected,
                "{current:?} then {next:?}"
            );
        }
    }
    for current in PaymentState::ALL {
        for next in PaymentState::ALL {
            let succession = PaymentState::succession(Some(current), next);
            // A record never moves a payment back, except a new attempt once nothing was charged.
            if succession != K && next != V {
                assert!(current.rank() <= next.rank(), "{current:?} then {next:?}");
            }
            let newer = PaymentState::after(Some(current), next, false);
            let older = PaymentState::after(Some(current), next, true);
            match succession {
                R => assert_eq!((newer, older), (next, next)),
                O => assert_eq!((newer, older), (next, current)),
                K => assert_eq!((newer, older), (current, current)),
            }
        }
        assert_eq!(PaymentState::after(None, current, true), current);
    }
}

/// Every (recorded state, next record) pair one gateway writes in order: the lifecycle's journal
/// lines under both policies, then what happens outside a request (a restart or a claim turns an
/// interrupted `verified` into `pending`, reconciliation closes `pending`, and an authorization
/// released after `failed` or `not_charged` may pay for a new attempt).
pub(crate) fn journal_transitions() -> Vec<(Option<PaymentState>, PaymentState)> {
    let mut pairs: Vec<(Option<PaymentState>, PaymentState)> = vec![
        (Some(PaymentState::Verified), PaymentState::Pending),
        (Some(PaymentState::Pending), PaymentState::Settled),
        (Some(PaymentState::Pending), PaymentState::Failed),
        (Some(PaymentState::Failed), PaymentState::Verified),
        (Some(PaymentState::NotCharged), PaymentState::Verified),
    ];
    for policy in [AfterSuccess, Before] {
        let mut seen: Vec<(Lifecycle, Option<PaymentState>)> = vec![(Lifecycle::new(policy), None)];
        let mut i = 0;
        while i < seen.len() {
            for event in events() {
                let (mut life, last) = seen[i].clone();
                let decision = life.on(event);
                let mut written = last;
                if let Some((state, _)) = decision.journal {
                    if !pairs.contains(&(last, state)) {
                        pairs.push((last, state));
                    }
                    written = Some(state);
                }
                if !seen.contains(&(life.clone(), written)) {
                    seen.push((life, written));
                }
            }
            i += 1;
        }
    }
    pairs
}

#[test]
fn what_one_gateway_writes_in_order_always_moves_the_payment_forward_by_the_table() {
    let pairs = journal_transitions();
    for expected in [
        (None, PaymentState::Verified),
        (Some(PaymentState::Verified), PaymentState::Settled),
        (Some(PaymentState::Verified), PaymentState::Pending),
        (Some(PaymentState::Verified), PaymentState::Failed),
        (Some(PaymentState::Verified), PaymentState::NotCharged),
        // Settled up front, then the upstream failed: the same state with a reason.
        (Some(PaymentState::Settled), PaymentState::Settled),
        (Some(PaymentState::Pending), PaymentState::Pending),
    ] {
        assert!(pairs.contains(&expected), "{expected:?} in {pairs:?}");
    }
    for (current, next) in pairs {
        // In order, a record is never older than the one before it.
        let after = PaymentState::after(current, next, false);
        assert_eq!(after, next, "{current:?} then {next:?}");
    }
}

#[test]
fn an_identified_payment_burns_with_its_response_and_others_burn_at_once() {
    for policy in [AfterSuccess, Before] {
        for identified in [false, true] {
            for life in reachable(policy) {
                for event in events() {
                    let plain = life.clone().on(event.clone());
                    let mut marked = life.clone();
                    if identified {
                        marked = marked.identified();
                    }
                    let decision = marked.on(event.clone());
                    let expected = match (plain.reservation, identified) {
                        (Reservation::Burn, true) => Reservation::BurnWithResponse,
                        (other, _) => other,
                    };
                    assert_eq!(decision.reservation, expected, "{life:?} {event:?}");
                    assert_eq!(decision.answer, plain.answer, "{life:?} {event:?}");
                }
            }
        }
    }
    // The settlement that moves money is one such burn.
    let mut life = Lifecycle::new(AfterSuccess).identified();
    life.on(Event::Accepted);
    assert_eq!(
        life.on(Event::UpstreamAnswered { status: 200 }).answer,
        Answer::Settle
    );
    let settled = life.on(Event::SettleAnswered(SettleOutcome::Settled(
        Finality::Confirmed,
    )));
    assert_eq!(settled.reservation, Reservation::BurnWithResponse);
}

#[test]
fn only_the_verified_line_written_elsewhere_or_not_at_all_changes_the_course() {
    for policy in [AfterSuccess, Before] {
        // Written: the decision stands.
        let mut life = Lifecycle::new(policy);
        life.on(Event::Accepted);
        assert_eq!(
            life.journal_answered(PaymentState::Verified, JournalWrite::Written),
            None
        );
        // Held by another request: ours is released, 409.
        let mut life = Lifecycle::new(policy);
        life.on(Event::Accepted);
        let held = life
            .journal_answered(
                PaymentState::Verified,
                JournalWrite::HeldElsewhere {
                    state: PaymentState::Verified,
                },
            )
            .expect("a new decision");
        assert_eq!(held.answer, Answer::Duplicate { settled: false });
        assert_eq!(held.reservation, Reservation::Release);
        // Already settled or pending elsewhere: used.
        for state in [PaymentState::Settled, PaymentState::Pending] {
            let mut life = Lifecycle::new(policy);
            life.on(Event::Accepted);
            let used = life
                .journal_answered(
                    PaymentState::Verified,
                    JournalWrite::HeldElsewhere { state },
                )
                .expect("a new decision");
            assert_eq!(used.answer, Answer::Duplicate { settled: true });
        }
        // Not written: nothing is charged without a record.
        let mut life = Lifecycle::new(policy);
        life.on(Event::Accepted);
        let failed = life
            .journal_answered(PaymentState::Verified, JournalWrite::Failed)
            .expect("a new decision");
        assert_eq!(
            failed.answer,
            Answer::Fail {
                failure: Failure::JournalUnavailable,
                receipt: false
            }
        );
        assert_eq!(failed.reservation, Reservation::Release);
        assert_eq!(life.stage(), &Stage::NotCharged);
    }
    // After money moved, a line that cannot be written changes nothing.
    let mut life = Lifecycle::new(AfterSuccess);
    life.on(Event::Accepted);
    life.on(Event::UpstreamAnswered { status: 200 });
    life.on(Event::SettleAnswered(SettleOutcome::Settled(
        Finality::Confirmed,
    )));
    for state in [
        PaymentState::Settled,
        PaymentState::Pending,
        PaymentState::NotCharged,
    ] {
        assert_eq!(life.journal_answered(state, JournalWrite::Failed), None);
    }
    assert_eq!(life.stage(), &Stage::Settled(Finality::Confirmed));
}

#[test]
fn a_refused_reservation_is_answered_by_what_the_store_knows() {
    let used = reservation_refused(&ReplayError::AlreadySettled);
    assert_eq!(
        (
            used.code,
            used.status,
            used.challenge,
            used.replay,
            used.retry
        ),
        ("payment_already_used", 402, true, true, false)
    );
    assert_eq!(used.outcome, Outcome::Refused);
    // A tombstone is refused exactly like a settled authorization.
    assert_eq!(reservation_refused(&ReplayError::OutcomeUnknown), used);
    let busy = reservation_refused(&ReplayError::InFlight);
    assert_eq!(
        (
            busy.code,
            busy.status,
            busy.challenge,
            busy.replay,
            busy.retry
        ),
        ("payment_in_progress", 409, false, true, false)
    );
    let down = reservation_refused(&ReplayError::Unavailable);
    assert_eq!(
        (
            down.code,
            down.status,
            down.challenge,
            down.replay,
            down.retry
        ),
        ("replay_store_unavailable", 503, false, false, true)
    );
    assert_eq!(down.outcome, Outcome::Error);
}

#[test]
fn an_identifier_is_kept_with_its_response_only_when_settled_and_delivered_whole() {
    for policy in [AfterSuccess, Before] {
        for life in reachable(policy) {
            for whole in [false, true] {
                let end = life.identifier_end(whole);
                let expected = match (life.stage(), whole) {
                    (Stage::Settled(_), true) => IdentifierEnd::KeepResponse,
                    (Stage::Settled(_), false) => IdentifierEnd::SettledWithoutResponse,
                    // Money may have moved: no resend may buy another request yet.
                    (Stage::Unknown | Stage::Settling, _) => IdentifierEnd::HoldUntilExpiry,
                    _ => IdentifierEnd::Abandon,
                };
                assert_eq!(end, expected, "{life:?} whole={whole}");
            }
        }
    }
    let mut refused = Lifecycle::new(AfterSuccess);
    refused.on(Event::VerifyRefused {
        reason: "insufficient_funds".into(),
    });
    assert_eq!(refused.identifier_end(true), IdentifierEnd::Abandon);
}

#[test]
fn the_lifecycle_keeps_the_last_outcome_its_decisions_counted() {
    let (life, d) = run(AfterSuccess, vec![Event::Accepted]);
    assert_eq!(d[0].outcome, None);
    assert_eq!(life.outcome(), None, "nothing counted before an answer");
    let (life, d) = run(
        AfterSuccess,
        vec![
            Event::Accepted,
            Event::UpstreamAnswered { status: 200 },
            settled(Finality::Confirmed),
            Event::Ended,
        ],
    );
    assert_eq!(d[2].outcome, Some(Outcome::Paid));
    assert_eq!(d[3].outcome, None, "the end counts nothing new");
    assert_eq!(life.outcome(), Some(Outcome::Paid));
    // Every decision that counts an outcome leaves it as the lifecycle's, whatever came before.
    for policy in [AfterSuccess, Before] {
        for start in reachable(policy) {
            for event in events() {
                let mut life = start.clone();
                let decision = life.on(event);
                let expected = decision.outcome.or(start.outcome());
                assert_eq!(life.outcome(), expected, "{start:?}");
            }
        }
    }
}

mod metered_settlement {
    use super::super::*;
    use super::run;
    use SettlementPolicy::AfterSuccess;

    const MAX: u128 = 1_000_000;

    fn metering(header: Option<UsageHeader>, fallback: UsageFallback) -> Metering {
        Metering {
            header,
            body: None,
            fallback,
        }
    }

    fn usage_header(unit_amount: u128) -> Option<UsageHeader> {
        Some(UsageHeader {
            name: http::HeaderName::from_static("x-usage"),
            meter: Meter::PerUnit { unit_amount },
        })
    }

    fn amount_header() -> Option<UsageHeader> {
        Some(UsageHeader {
            name: http::HeaderName::from_static("x-amount"),
            meter: Meter::Absolute,
        })
    }

    fn reported(amount: u128) -> MeteredCharge {
        MeteredCharge {
            amount,
            basis: ChargeBasis::Reported,
        }
    }

    #[test]
    fn overrides_are_read_as_the_official_middleware_reads_them() {
        assert_eq!(
            settlement_override(r#"{"amount":"1858"}"#, MAX, 6),
            Ok(1858)
        );
        assert_eq!(
            settlement_override(r#"{"amount":"50%"}"#, MAX, 6),
            Ok(500_000)
        );
        assert_eq!(
            settlement_override(r#"{"amount":"12.5%"}"#, MAX, 6),
            Ok(125_000)
        );
        // Two decimals of a percent at most, rounded down like BigInt division.
        assert_eq!(
            settlement_override(r#"{"amount":"33.33%"}"#, 100, 6),
            Ok(33)
        );
        assert_eq!(
            settlement_override(r#"{"amount":"$0.05"}"#, MAX, 6),
            Ok(50_000)
        );
        assert_eq!(
            settlement_override(r#"{"amount":"$1"}"#, MAX, 6),
            Ok(1_000_000)
        );
        // Precision beyond the asset's decimals is dropped.
        assert_eq!(
            settlement_override(r#"{"amount":"$0.0000019"}"#, MAX, 6),
            Ok(1)
        );
        assert_eq!(settlement_override(r#"{"amount":"0"}"#, MAX, 6), Ok(0));
        assert_eq!(
            settlement_override(r#"{"amount":"250%"}"#, MAX, 6),
            Ok(2_500_000)
        );
    }

    #[test]
    fn unreadable_overrides_say_what_is_wrong() {
        for text in [
            "not json",
            r#"{"amount":12}"#,
            r#"{"price":"12"}"#,
            r#"{"amount":"-1"}"#,
            r#"{"amount":"1.5"}"#,
            r#"{"amount":"12.345%"}"#,
            r#"{"amount":"%"}"#,
            r#"{"amount":"$"}"#,
            r#"{"amount":"$1."}"#,
            r#"{"amount":"0x10"}"#,
            r#"{"amount":"99999999999999999999999999999999999999999"}"#,
        ] {
            let problem = settlement_override(text, MAX, 6).expect_err(text);
            assert!(
                problem.contains("Settlement-Overrides"),
                "{text}: {problem}"
            );
        }
    }

    #[test]
    fn overrides_win_over_the_routes_usage_header() {
        let m = metering(usage_header(10), UsageFallback::Maximum);
        let charge = response_charge(&m, MAX, 6, Some(r#"{"amount":"7"}"#), Some("3"));
        assert_eq!(charge, reported(7));
        let charge = response_charge(&m, MAX, 6, None, Some("3"));
        assert_eq!(charge, reported(30));
    }

    #[test]
    fn an_amount_header_is_charged_as_it_is() {
        let m = metering(amount_header(), UsageFallback::Nothing);
        assert_eq!(
            response_charge(&m, MAX, 6, None, Some("4242")),
            reported(4242)
        );
    }

    #[test]
    fn a_charge_above_the_maximum_is_the_maximum() {
        let m = metering(usage_header(1000), UsageFallback::Nothing);
        let over = response_charge(&m, MAX, 6, Some(r#"{"amount":"$5"}"#), None);
        assert_eq!(over.amount, MAX);
        assert_eq!(over.basis, ChargeBasis::Capped);
        let over = response_charge(&m, MAX, 6, None, Some("1001"));
        assert_eq!((over.amount, over.basis), (MAX, ChargeBasis::Capped));
    }

    #[test]
    fn a_missing_or_unreadable_report_charges_the_fallback_and_names_the_problem() {
        for fallback in [UsageFallback::Maximum, UsageFallback::Nothing] {
            let expected = match fallback {
                UsageFallback::Maximum => MAX,
                UsageFallback::Nothing => 0,
            };
            let with_header = metering(usage_header(10), fallback);
            let without = metering(None, fallback);
            let cases = [
                (
                    response_charge(&with_header, MAX, 6, None, None),
                    "no usage",
                ),
                (
                    response_charge(&with_header, MAX, 6, None, Some("lots")),
                    "lots",
                ),
                (
                    response_charge(&with_header, MAX, 6, Some("{"), Some("3")),
                    "not JSON",
                ),
                (
                    response_charge(&without, MAX, 6, None, None),
                    "no Settlement-Overrides",
                ),
            ];
            for (charge, named) in cases {
                assert_eq!(charge.amount, expected);
                match charge.basis {
                    ChargeBasis::Fallback {
                        fallback: f,
                        problem,
                    } => {
                        assert_eq!(f, fallback);
                        assert!(problem.contains(named), "{problem} should name {named}");
                    }
                    other => panic!("not a fallback: {other:?}"),
                }
            }
        }
    }

    fn usage_json(unit_amount: u128, fallback: UsageFallback) -> Metering {
        Metering {
            header: None,
            body: Some(crate::pricing::UsageJson {
                path: crate::pricing::UsagePath::parse("usage.total_tokens").expect("path"),
                unit_amount,
            }),
            fallback,
        }
    }

    #[test]
    fn a_body_usage_is_charged_per_unit_within_the_maximum() {
        let m = usage_json(1_000, UsageFallback::Maximum);
        assert_eq!(body_charge(&m, MAX, 6, None, Ok(42)), reported(42_000));
        assert_eq!(body_charge(&m, MAX, 6, None, Ok(0)), reported(0));
        assert_eq!(body_charge(&m, MAX, 6, None, Ok(1_000)), reported(MAX));
        let over = body_charge(&m, MAX, 6, None, Ok(1_001));
        assert_eq!((over.amount, over.basis), (MAX, ChargeBasis::Capped));
        let overflow = body_charge(&m, MAX, 6, None, Ok(u128::MAX));
        assert_eq!(
            (overflow.amount, overflow.basis),
            (MAX, ChargeBasis::Capped)
        );
    }

    #[test]
    fn settlement_overrides_win_over_the_body() {
        let m = usage_json(1_000, UsageFallback::Nothing);
        let charge = body_charge(&m, MAX, 6, Some(r#"{"amount":"7"}"#), Ok(3));
        assert_eq!(charge, reported(7));
        let unreadable = body_charge(&m, MAX, 6, Some("{"), Ok(3));
        assert!(matches!(unreadable.basis, ChargeBasis::Fallback { .. }));
        assert_eq!(unreadable.amount, 0);
    }

    #[test]
    fn an_unreadable_body_usage_charges_the_fallback_and_names_the_problem() {
        for (fallback, amount) in [(UsageFallback::Maximum, MAX), (UsageFallback::Nothing, 0)] {
            let m = usage_json(1_000, fallback);
            let charge = body_charge(&m, MAX, 6, None, Err("no `usage.total_tokens`".into()));
            assert_eq!(charge.amount, amount);
            match charge.basis {
                ChargeBasis::Fallback {
                    fallback: f,
                    problem,
                } => {
                    assert_eq!(f, fallback);
                    assert!(problem.contains("usage.total_tokens"), "{problem}");
                }
                other => panic!("not a fallback: {other:?}"),
            }
        }
        // A route with no body source is never charged from a body it does not read.
        let header_route = metering(usage_header(1), UsageFallback::Nothing);
        let charge = body_charge(&header_route, MAX, 6, None, Ok(5));
        assert_eq!(charge.amount, 0);
        assert!(matches!(charge.basis, ChargeBasis::Fallback { .. }));
    }

    #[test]
    fn a_charge_is_settled_after_a_successful_answer() {
        let (life, decisions) = run(
            AfterSuccess,
            vec![
                Event::Accepted,
                Event::MeteredAnswered {
                    status: 200,
                    charge: reported(250_000),
                },
                Event::SettleAnswered(SettleOutcome::Settled(Finality::Confirmed)),
            ],
        );
        assert_eq!(decisions[1].answer, Answer::Settle);
        assert_eq!(decisions[1].reservation, Reservation::Keep);
        assert_eq!(decisions[2].answer, Answer::Deliver);
        assert_eq!(decisions[2].reservation, Reservation::Burn);
        assert_eq!(life.stage(), &Stage::Settled(Finality::Confirmed));
        assert_eq!(life.outcome(), Some(Outcome::Paid));
        assert!(life.settle_attempted());
    }

    #[test]
    fn a_zero_charge_is_delivered_unsettled_journaled_and_burned() {
        let (life, decisions) = run(
            AfterSuccess,
            vec![
                Event::Accepted,
                Event::MeteredAnswered {
                    status: 200,
                    charge: reported(0),
                },
                Event::Ended,
            ],
        );
        let zero = &decisions[1];
        assert_eq!(zero.answer, Answer::Deliver);
        // Permit2 would still honour the authorization: it must not buy a second request.
        assert_eq!(zero.reservation, Reservation::Burn);
        assert_eq!(
            zero.journal,
            Some((PaymentState::Settled, NOTHING_USED.to_string()))
        );
        assert_eq!(zero.outcome, Some(Outcome::Paid));
        assert!(!life.settle_attempted(), "no /settle for nothing");
        assert_eq!(life.stage(), &Stage::Settled(Finality::Confirmed));
        assert_eq!(decisions[2].answer, Answer::Nothing);
        assert_eq!(decisions[2].reservation, Reservation::Keep);
    }

    #[test]
    fn a_zero_charge_with_an_identifier_keeps_its_response() {
        let mut life = Lifecycle::new(AfterSuccess).identified();
        life.on(Event::Accepted);
        let zero = life.on(Event::MeteredAnswered {
            status: 200,
            charge: reported(0),
        });
        assert_eq!(zero.reservation, Reservation::BurnWithResponse);
        assert_eq!(life.identifier_end(true), IdentifierEnd::KeepResponse);
    }

    #[test]
    fn a_failed_or_informational_answer_charges_nothing_whatever_the_report() {
        for status in [400, 404, 500, 503] {
            let mut metered = Lifecycle::new(AfterSuccess);
            let mut plain = Lifecycle::new(AfterSuccess);
            metered.on(Event::Accepted);
            plain.on(Event::Accepted);
            let decision = metered.on(Event::MeteredAnswered {
                status,
                charge: reported(MAX),
            });
            assert_eq!(decision, plain.on(Event::UpstreamAnswered { status }));
            assert_eq!(decision.reservation, Reservation::Release);
            assert_eq!(metered.stage(), &Stage::NotCharged);
        }
        let mut life = Lifecycle::new(AfterSuccess);
        life.on(Event::Accepted);
        let early = life.on(Event::MeteredAnswered {
            status: 103,
            charge: reported(5),
        });
        assert_eq!(early.answer, Answer::Nothing);
        assert_eq!(life.stage(), &Stage::Verified);
    }

    #[test]
    fn a_metered_answer_outside_a_verified_payment_is_its_plain_status() {
        for events in [
            vec![],
            vec![Event::Accepted, Event::UpstreamAnswered { status: 200 }],
            vec![
                Event::Accepted,
                Event::UpstreamAnswered { status: 200 },
                Event::SettleAnswered(SettleOutcome::Settled(Finality::Confirmed)),
            ],
        ] {
            let (mut metered, _) = run(AfterSuccess, events.clone());
            let (mut plain, _) = run(AfterSuccess, events);
            let a = metered.on(Event::MeteredAnswered {
                status: 200,
                charge: reported(0),
            });
            let b = plain.on(Event::UpstreamAnswered { status: 200 });
            assert_eq!(a, b);
            assert_eq!(metered, plain);
        }
    }
}

#[test]
fn a_payment_on_an_access_route_grants_access_once_when_it_settles() {
    for policy in [AfterSuccess, Before] {
        // every path through the table: the grant comes with the decision that settles, and
        // only on a route that gives access
        for start in reachable(policy) {
            for event in events() {
                for granting in [false, true] {
                    let mut life = if granting {
                        start.clone().granting_access()
                    } else {
                        start.clone()
                    };
                    let was_settled = matches!(life.stage(), Stage::Settled(_));
                    let decision = life.on(event.clone());
                    let settled_now = matches!(life.stage(), Stage::Settled(_)) && !was_settled;
                    assert_eq!(
                        decision.grant_access,
                        granting && settled_now,
                        "{policy:?} {start:?} {event:?}"
                    );
                }
            }
        }
    }
    let mut life = Lifecycle::new(AfterSuccess).granting_access();
    assert!(!life.on(Event::Accepted).grant_access);
    assert!(
        !life
            .on(Event::UpstreamAnswered { status: 200 })
            .grant_access
    );
    assert!(life.on(settled(Finality::Confirmed)).grant_access);
    assert!(!life.on(Event::Ended).grant_access);
    // refused or failed settlements grant nothing
    let mut refused = Lifecycle::new(AfterSuccess).granting_access();
    refused.on(Event::Accepted);
    refused.on(Event::UpstreamAnswered { status: 200 });
    let decision = refused.on(Event::SettleAnswered(SettleOutcome::Refused {
        reason: "insufficient_funds".into(),
    }));
    assert!(!decision.grant_access);
}
