use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const NOW: i64 = 1_780_000_000_000;

fn row(id: &str, first_time: i64, state: PaymentState, route: &str, amount: &str) -> Receipt {
    Receipt {
        first_time: rfc3339(first_time),
        entry: JournalEntry {
            time: rfc3339(first_time + 500),
            id: id.into(),
            state,
            route: route.into(),
            payer: "0xAbC0000000000000000000000000000000000001".into(),
            amount: amount.into(),
            asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
            network: "eip155:84532".into(),
            pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            transaction: String::new(),
            facilitator: "x402".into(),
            reason: String::new(),
            key: "secret-replay-key".into(),
            valid_before: 1,
            settle_request: "{\"signed\":true}".into(),
        },
    }
}

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_token_is_required_once_configured_and_loopback_is_enough_without_one() {
    let local = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let remote = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    let token = Some("s3cret-token");
    let header = |value: &'static str| Some(value.as_bytes());
    assert!(authorize(token, header("Bearer s3cret-token"), remote).is_ok());
    assert!(authorize(token, header("bearer   s3cret-token "), remote).is_ok());
    for wrong in [
        "Bearer s3cret-toke",
        "Bearer s3cret-token2",
        "Basic s3cret-token",
        "s3cret-token",
        "Bearer",
        "Bearer ",
        "",
    ] {
        let e = authorize(token, header(wrong), local).unwrap_err();
        assert_eq!((e.status, e.code), (401, "unauthorized"), "{wrong}");
    }
    assert_eq!(authorize(token, None, local).unwrap_err().status, 401);
    assert!(authorize(None, None, local).is_ok());
    assert!(authorize(None, None, Some(IpAddr::V6(Ipv6Addr::LOCALHOST))).is_ok());
    let mapped = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped();
    assert!(authorize(None, None, Some(IpAddr::V6(mapped))).is_ok());
    let e = authorize(None, header("Bearer anything"), remote).unwrap_err();
    assert_eq!((e.status, e.code), (403, "loopback_only"));
    assert_eq!(authorize(None, None, None).unwrap_err().status, 403);
    assert!(same_secret(b"abc", b"abc"));
    assert!(!same_secret(b"abc", b"abd"));
    assert!(!same_secret(b"abc", b"abcd"));
}

#[test]
fn times_are_rfc_3339_with_zulu_or_an_offset_or_a_date() {
    let at = parse_time("2026-05-01T12:00:00Z").unwrap();
    assert_eq!(parse_time("2026-05-01T14:00:00+02:00"), Some(at));
    assert_eq!(parse_time("2026-05-01T09:30:00-02:30"), Some(at));
    assert_eq!(parse_time("2026-05-01T12:00:00.000Z"), Some(at));
    assert_eq!(
        parse_time("2026-05-01"),
        Some(at - 12 * 3_600_000),
        "a date is midnight UTC"
    );
    for bad in ["yesterday", "2026-13-01", "2026-05-01T12:00:00+25:00", ""] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
}

#[test]
fn payment_queries_are_checked_and_read_into_the_journal_filter() {
    let query = payments_query(&q(&[
        ("state", "settled"),
        ("route", "GET /paid"),
        ("payer", "0xabc"),
        ("from", "2026-05-01T00:00:00Z"),
        ("to", "2026-05-02T00:00:00Z"),
        ("limit", "2"),
    ]))
    .unwrap();
    assert_eq!(query.limit, 2);
    assert_eq!(query.filter.state, Some(PaymentState::Settled));
    assert_eq!(query.filter.route.as_deref(), Some("GET /paid"));
    assert_eq!(query.filter.payer.as_deref(), Some("0xabc"));
    assert_eq!(
        query.filter.until_ms.unwrap() - query.filter.since_ms.unwrap(),
        86_400_000
    );
    assert_eq!(payments_query(&[]).unwrap().limit, DEFAULT_LIMIT);
    for bad in [
        q(&[("state", "paid")]),
        q(&[("limit", "0")]),
        q(&[("limit", "501")]),
        q(&[("limit", "ten")]),
        q(&[("from", "soon")]),
        q(&[("from", "2026-05-02"), ("to", "2026-05-01")]),
        q(&[("cursor", "not-a-cursor")]),
        q(&[("colour", "red")]),
        q(&[("route", "a"), ("route", "b")]),
    ] {
        let e = payments_query(&bad).unwrap_err();
        assert_eq!((e.status, e.code), (400, "invalid_parameter"), "{bad:?}");
        assert_eq!(e.body()["error"], "invalid_parameter");
    }
    assert_eq!(
        params(Some("route=GET%20%2Fpaid&payer=0x1+2")),
        q(&[("route", "GET /paid"), ("payer", "0x1 2")])
    );
}

#[test]
fn pages_run_newest_first_and_the_cursor_continues_where_the_last_page_ended() {
    let rows: Vec<Receipt> = (0..5)
        .map(|i| {
            row(
                &format!("p{i}"),
                NOW + i * 1000,
                PaymentState::Settled,
                "GET /paid",
                "10",
            )
        })
        .chain([row(
            "p2b",
            NOW + 2000,
            PaymentState::Settled,
            "GET /paid",
            "10",
        )])
        .collect();
    let mut seen = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let (page, next) = page(rows.clone(), 2, cursor.as_ref());
        assert!(page.len() <= 2);
        seen.extend(page.iter().map(|r| r.entry.id.clone()));
        match next {
            // The cursor a client holds is the encoded one.
            Some(next) => cursor = Some(Cursor::decode(&next.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, ["p4", "p3", "p2b", "p2", "p1", "p0"]);
    let (all, next) = page(rows.clone(), 6, None);
    assert_eq!(all.len(), 6);
    assert_eq!(next, None, "no cursor when nothing is left");
    let (empty, next) = page(Vec::new(), 2, None);
    assert!(empty.is_empty() && next.is_none());
}

#[test]
fn payments_needing_attention_are_pending_unknown_interrupted_or_refund_candidates() {
    let mut pending = row("a", NOW - 1000, PaymentState::Pending, "GET /paid", "10");
    assert_eq!(attention(&pending.entry, NOW), Some(Attention::Pending));
    pending.entry.reason = "settlement_timeout".into();
    assert_eq!(
        attention(&pending.entry, NOW),
        Some(Attention::UnknownOutcome)
    );
    pending.entry.reason = "upstream_failed".into();
    assert_eq!(attention(&pending.entry, NOW), Some(Attention::Pending));

    let mut settled = row("b", NOW - 1000, PaymentState::Settled, "GET /paid", "10");
    assert_eq!(attention(&settled.entry, NOW), None);
    for reason in ["upstream_status_500", "upstream_failed", "tool_error"] {
        settled.entry.reason = reason.into();
        assert_eq!(
            attention(&settled.entry, NOW),
            Some(Attention::RefundCandidate),
            "{reason}"
        );
    }
    settled.entry.reason = NOTHING_USED.into();
    assert_eq!(attention(&settled.entry, NOW), None);

    let recent = row("c", NOW - 1000, PaymentState::Verified, "GET /paid", "10");
    assert_eq!(attention(&recent.entry, NOW), None, "still in flight");
    let stuck = row(
        "d",
        NOW - 20 * 60_000,
        PaymentState::Verified,
        "GET /paid",
        "10",
    );
    assert_eq!(attention(&stuck.entry, NOW), Some(Attention::Interrupted));
    for state in [PaymentState::Failed, PaymentState::NotCharged] {
        let r = row("e", NOW - 20 * 60_000, state, "GET /paid", "10");
        assert_eq!(attention(&r.entry, NOW), None);
    }

    settled.entry.reason = "upstream_status_502".into();
    let listed = needing_attention(vec![recent, stuck, pending, settled], NOW);
    let ids: Vec<(&str, &str)> = listed
        .iter()
        .map(|(a, r)| (a.as_str(), r.entry.id.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("refund_candidate", "b"),
            ("pending", "a"),
            ("interrupted", "d")
        ]
    );
}

#[test]
fn revenue_is_summed_per_bucket_route_network_and_asset_with_totals() {
    let hour = 3_600_000;
    let start = Bucket::Day.start(NOW);
    let rows = vec![
        row("a", start + 10, PaymentState::Settled, "GET /paid", "10000"),
        row("b", start + 20, PaymentState::Settled, "GET /paid", "10000"),
        row(
            "c",
            start + hour + 5,
            PaymentState::Settled,
            "GET /paid",
            "10000",
        ),
        row(
            "d",
            start + hour + 6,
            PaymentState::Settled,
            "GET /other",
            "250000",
        ),
        row(
            "e",
            start + hour + 7,
            PaymentState::Failed,
            "GET /paid",
            "10000",
        ),
        row(
            "f",
            start + hour + 8,
            PaymentState::Settled,
            "GET /paid",
            "garbage",
        ),
    ];
    let lookup = |network: &str, asset: &str| {
        (network == "eip155:84532" && asset.starts_with("0x036C")).then(|| ("USDC".to_string(), 6))
    };
    let hourly = revenue(&rows, Bucket::Hour, &lookup);
    assert_eq!(hourly["bucket"], "hour");
    let series: Vec<(String, String, String, u64)> = hourly["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["start"].as_str().unwrap().to_string(),
                s["route"].as_str().unwrap().to_string(),
                s["amount"].as_str().unwrap().to_string(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        series,
        [
            (rfc3339(start), "GET /paid".into(), "20000".into(), 2),
            (
                rfc3339(start + hour),
                "GET /other".into(),
                "250000".into(),
                1
            ),
            (rfc3339(start + hour), "GET /paid".into(), "10000".into(), 1),
        ]
    );
    assert_eq!(hourly["unreadable"], 1);
    let totals = &hourly["totals"][0];
    assert_eq!(totals["amount"], "280000");
    assert_eq!(totals["count"], 4);
    assert_eq!(totals["symbol"], "USDC");
    assert_eq!(totals["display"], "0.28");
    let routes = hourly["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[1]["route"], "GET /paid");
    assert_eq!(routes[1]["amount"], "30000");

    let daily = revenue(&rows, Bucket::Day, &|_, _| None);
    assert_eq!(
        daily["series"].as_array().unwrap().len(),
        2,
        "one bucket, two routes"
    );
    assert_eq!(daily["series"][0]["start"], rfc3339(start));
    assert_eq!(daily["totals"][0]["symbol"], Value::Null);

    let query = revenue_query(&q(&[("bucket", "day"), ("route", "GET /paid")])).unwrap();
    assert_eq!(query.bucket, Bucket::Day);
    assert_eq!(query.filter.state, Some(PaymentState::Settled));
    assert!(revenue_query(&q(&[("bucket", "week")])).is_err());
    assert!(revenue_query(&q(&[("state", "failed")])).is_err());
}

#[test]
fn a_payment_is_shown_without_its_replay_key_or_settle_request_and_with_its_explorer_link() {
    let mut r = row("a", NOW, PaymentState::Settled, "GET /paid", "10");
    r.entry.transaction = format!("0x{}", "ab".repeat(32));
    let admin = AdminConfig {
        listen: "127.0.0.1:9402".parse().unwrap(),
        probe_interval: std::time::Duration::from_secs(5),
        token: None,
        explorers: [(
            "eip155:84532".to_string(),
            "https://sepolia.basescan.org/tx/".to_string(),
        )]
        .into(),
    };
    let usdc = |_: &str, _: &str| Some(("USDC".to_string(), 6u8));
    let shown = payment_json(&r, &admin, &usdc, NOW);
    let text = shown.to_string();
    assert!(
        !text.contains("secret-replay-key") && !text.contains("signed"),
        "{text}"
    );
    assert_eq!(
        shown["explorer_url"],
        format!("https://sepolia.basescan.org/tx/{}", r.entry.transaction)
    );
    assert_eq!(shown["first_time"], rfc3339(NOW));
    assert_eq!(shown["attention"], Value::Null);
    assert_eq!(
        (&shown["symbol"], &shown["display"]),
        (&json!("USDC"), &json!("0.00001"))
    );
    r.entry.transaction = "<script>".into();
    assert_eq!(
        payment_json(&r, &admin, &usdc, NOW)["explorer_url"],
        Value::Null
    );
    r.entry.network = "eip155:1".into();
    r.entry.transaction = format!("0x{}", "ab".repeat(32));
    assert_eq!(
        payment_json(&r, &admin, &usdc, NOW)["explorer_url"],
        Value::Null
    );
}

#[test]
fn urls_are_shown_as_their_origin_only() {
    assert_eq!(
        origin("https://user:pw@facilitator.example:8443/v2/x402?key=abc"),
        "https://facilitator.example:8443"
    );
    assert_eq!(origin("not a url"), "(unreadable url)");
}
