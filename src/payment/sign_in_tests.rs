use super::*;

// Signed by the official `@x402/extensions` client (`createSIWxPayload`, viem account of anvil
// key 1) for the challenge below; `MESSAGE` is its `formatSIWEMessage`.
const HEADER: &str = "eyJkb21haW4iOiJhcGkuZXhhbXBsZS5jb20iLCJhZGRyZXNzIjoiMHg3MDk5Nzk3MEM1MTgxMmRjM0EwMTBDN2QwMWI1MGUwZDE3ZGM3OUM4IiwidXJpIjoiaHR0cHM6Ly9hcGkuZXhhbXBsZS5jb20vcmVwb3J0P2RheT0xIiwidmVyc2lvbiI6IjEiLCJjaGFpbklkIjoiZWlwMTU1Ojg0NTMyIiwidHlwZSI6ImVpcDE5MSIsIm5vbmNlIjoiMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYiLCJpc3N1ZWRBdCI6IjIwMjYtMTItMDZUMDQ6MDA6MDAuMDAwWiIsImV4cGlyYXRpb25UaW1lIjoiMjAyNi0xMi0wNlQwNDowNTowMC4wMDBaIiwicmVzb3VyY2VzIjpbImh0dHBzOi8vYXBpLmV4YW1wbGUuY29tL3JlcG9ydD9kYXk9MSJdLCJzaWduYXR1cmUiOiIweDA3NzYzZGY0ODYyNGZhYjUzMTcxYThhOTA1YjExMTFhYWY4MDAxNzBmNGI0ZGY0ZDQ4OWIyYTg0ZTlmMDI1ZDY1N2YyMmI5MTBiMjQ2ZTdhMGJkNmIzNmI0Mzk0OGNlYTZmZDUxYzMzMWZmMzZjNDU0YjBiOTY1ZDdkNWYyOTdjMWIifQ==";
const MESSAGE: &str = "api.example.com wants you to sign in with your Ethereum account:\n0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n\n\nURI: https://api.example.com/report?day=1\nVersion: 1\nChain ID: 84532\nNonce: 0123456789abcdef0123456789abcdef\nIssued At: 2026-12-06T04:00:00.000Z\nExpiration Time: 2026-12-06T04:05:00.000Z\nResources:\n- https://api.example.com/report?day=1";
// The same challenge with a statement.
const STATEMENT_SIGNATURE: &str = "0x64ee3cd795bd1edfbdf1664da05652abf2934efaff82f09e2379dac5ffcaaddf2fcc083e93acdb1a836400a503e8b3bb12119bae238c19d8bf4df6d6c8f6f02a1b";
const STATEMENT_MESSAGE: &str = "api.example.com wants you to sign in with your Ethereum account:\n0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n\nSign in to read the report again\n\nURI: https://api.example.com/report?day=1\nVersion: 1\nChain ID: 84532\nNonce: 0123456789abcdef0123456789abcdef\nIssued At: 2026-12-06T04:00:00.000Z\nExpiration Time: 2026-12-06T04:05:00.000Z\nResources:\n- https://api.example.com/report?day=1";
const SIGNER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// One minute after the challenge was issued.
const NOW: i64 = 1_796_529_660_000;

fn networks() -> Vec<String> {
    vec!["eip155:84532".to_string()]
}

fn terms(networks: &[String]) -> SignInTerms<'_> {
    SignInTerms {
        origin: "https://api.example.com",
        host: "api.example.com",
        networks,
    }
}

fn payload() -> SignInPayload {
    decode_sign_in(HEADER.as_bytes()).expect("the official header decodes")
}

fn refused(payload: &SignInPayload, now: i64) -> &'static str {
    let networks = networks();
    match check_sign_in(payload, terms(&networks), now) {
        Ok(signed) => panic!("accepted: {signed:?}"),
        Err(refusal) => refusal.code,
    }
}

#[test]
fn the_issued_time_of_the_vector_is_one_minute_before_now() {
    assert_eq!(
        parse_rfc3339("2026-12-06T04:00:00.000Z"),
        Some(NOW - 60_000)
    );
}

#[test]
fn the_message_is_written_as_the_official_client_writes_it() {
    let p = payload();
    let address: Address = SIGNER.parse().expect("an address");
    assert_eq!(siwe_message(&p, &address, 84532), MESSAGE);
    let with_statement = SignInPayload {
        statement: Some("Sign in to read the report again".into()),
        signature: STATEMENT_SIGNATURE.into(),
        ..p
    };
    assert_eq!(
        siwe_message(&with_statement, &address, 84532),
        STATEMENT_MESSAGE
    );
}

#[test]
fn an_official_sign_in_is_accepted_with_its_address_and_nonce() {
    let networks = networks();
    let signed = check_sign_in(&payload(), terms(&networks), NOW).expect("accepted");
    assert_eq!(signed.address, SIGNER);
    assert_eq!(signed.nonce, "0123456789abcdef0123456789abcdef");
    // remembered until the message's own expiry, which comes before the challenge lifetime ends
    assert_eq!(
        Some(signed.usable_until_ms),
        parse_rfc3339("2026-12-06T04:05:00.000Z")
    );
    let with_statement = SignInPayload {
        statement: Some("Sign in to read the report again".into()),
        signature: STATEMENT_SIGNATURE.into(),
        ..payload()
    };
    assert!(check_sign_in(&with_statement, terms(&networks), NOW).is_ok());
    // an unchecksummed address names the same wallet (the message carries its EIP-55 form)
    let lower = SignInPayload {
        address: SIGNER.to_lowercase(),
        ..payload()
    };
    assert_eq!(
        check_sign_in(&lower, terms(&networks), NOW)
            .expect("accepted")
            .address,
        SIGNER
    );
}

#[test]
fn a_message_for_another_gateway_is_refused() {
    let other_domain = SignInPayload {
        domain: "evil.example".into(),
        ..payload()
    };
    assert_eq!(refused(&other_domain, NOW), "invalid_siwx_domain_mismatch");
    for uri in [
        "https://evil.example/report",
        "http://api.example.com/report",
        "not a url",
    ] {
        let other_uri = SignInPayload {
            uri: uri.into(),
            ..payload()
        };
        assert_eq!(
            refused(&other_uri, NOW),
            "invalid_siwx_uri_mismatch",
            "{uri}"
        );
    }
}

#[test]
fn stale_expired_future_and_early_messages_are_refused() {
    let p = payload();
    assert_eq!(
        refused(&p, NOW + CHALLENGE_LIFETIME_MS),
        "invalid_siwx_issued_at_too_old"
    );
    assert_eq!(
        refused(&p, NOW - 60_000 - CLOCK_SKEW_MS - 1),
        "invalid_siwx_issued_at_in_future"
    );
    let expired = SignInPayload {
        expiration_time: Some("2026-12-06T04:00:30.000Z".into()),
        ..payload()
    };
    assert_eq!(refused(&expired, NOW), "invalid_siwx_expired");
    let early = SignInPayload {
        not_before: Some("2026-12-06T04:02:00.000Z".into()),
        ..payload()
    };
    assert_eq!(refused(&early, NOW), "invalid_siwx_not_yet_valid");
    let unreadable = SignInPayload {
        issued_at: "yesterday".into(),
        ..payload()
    };
    assert_eq!(refused(&unreadable, NOW), "invalid_siwx_issued_at");
}

#[test]
fn a_changed_field_breaks_the_signature() {
    let other_nonce = SignInPayload {
        nonce: "fedcba9876543210fedcba9876543210".into(),
        ..payload()
    };
    assert_eq!(refused(&other_nonce, NOW), "invalid_siwx_signature");
    let other_address = SignInPayload {
        address: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into(),
        ..payload()
    };
    assert_eq!(refused(&other_address, NOW), "invalid_siwx_signature");
}

#[test]
fn smart_wallet_and_malformed_signatures_say_why() {
    let smart = SignInPayload {
        signature: format!("0x{}", "ab".repeat(200)),
        ..payload()
    };
    let networks = networks();
    let refusal = check_sign_in(&smart, terms(&networks), NOW).expect_err("refused");
    assert_eq!(refusal.code, "invalid_siwx_signature");
    assert!(refusal.message.contains("EIP-1271"), "{}", refusal.message);
    let garbage = SignInPayload {
        signature: "0xnothex".into(),
        ..payload()
    };
    assert_eq!(refused(&garbage, NOW), "invalid_siwx_malformed_signature");
}

#[test]
fn only_the_routes_networks_and_eip191_are_accepted() {
    let other_chain = SignInPayload {
        chain_id: "eip155:8453".into(),
        ..payload()
    };
    assert_eq!(refused(&other_chain, NOW), "invalid_siwx_unsupported_chain");
    let solana = SignInPayload {
        chain_id: "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp".into(),
        ..payload()
    };
    assert_eq!(refused(&solana, NOW), "invalid_siwx_chain_id");
    let ed25519 = SignInPayload {
        signature_type: "ed25519".into(),
        ..payload()
    };
    assert_eq!(refused(&ed25519, NOW), "invalid_siwx_unsupported_chain");
}

#[test]
fn unreadable_headers_are_refused() {
    for header in ["%%%", "bm90IGpzb24=", "e30="] {
        let refusal = decode_sign_in(header.as_bytes()).expect_err("refused");
        assert_eq!(refusal.code, "invalid_siwx_header", "{header}");
    }
}

#[test]
fn the_declaration_names_the_public_url_a_fresh_nonce_and_each_network_once() {
    let networks = vec![
        "eip155:84532".to_string(),
        "eip155:8453".to_string(),
        "eip155:84532".to_string(),
    ];
    let declared = sign_in_declaration(SignInChallenge {
        host: "api.example.com",
        resource_url: "https://api.example.com/report?day=1",
        networks: &networks,
        nonce: "0123456789abcdef0123456789abcdef",
        now_ms: NOW,
        statement: None,
    });
    let info = &declared["info"];
    assert_eq!(info["domain"], "api.example.com");
    assert_eq!(info["uri"], "https://api.example.com/report?day=1");
    assert_eq!(info["nonce"], "0123456789abcdef0123456789abcdef");
    assert_eq!(info["issuedAt"], "2026-12-06T04:01:00.000Z");
    assert_eq!(info["expirationTime"], "2026-12-06T04:06:00.000Z");
    assert_eq!(info["resources"][0], "https://api.example.com/report?day=1");
    assert!(info.get("statement").is_none());
    assert_eq!(
        declared["supportedChains"],
        json!([{"chainId": "eip155:84532", "type": "eip191"}, {"chainId": "eip155:8453", "type": "eip191"}])
    );
    assert_eq!(declared["schema"]["required"][0], "domain");
}
