//! The echo rule of x402 extensions: a v2 client sends back (`PaymentPayload.extensions`) the
//! extensions the challenge declared, and may add to them, but must not change what the server
//! declared. The official 2.27 server refuses a changed echo with `extension_echo_mismatch` before
//! it asks any facilitator; so does the gateway, so that a catalog never records a declaration the
//! seller did not make.
//!
//! As in the official server only each extension's `info` is compared (its `schema` describes
//! `info`), and the echo must contain every declared field with the same value: objects key by
//! key (extra keys allowed), everything else exactly.

use super::verify::{reject, PaymentRejection};
use crate::payment::idempotency::PAYMENT_IDENTIFIER;
use crate::payment::sign_in::SIGN_IN_WITH_X;
use serde_json::{Map, Value};

/// The refusal code of a changed echo (the official server's).
pub const EXTENSION_ECHO_MISMATCH: &str = "extension_echo_mismatch";

/// `info` fields of an extension that a client may leave out or change: `required` of
/// `payment-identifier` is never read back from a payment, and clients that send only the id have
/// always been accepted; a sign-in challenge's nonce and times are fresh in every 402 (the
/// official extension's `dynamicInfoFields`).
fn free_fields(key: &str) -> &'static [&'static str] {
    match key {
        PAYMENT_IDENTIFIER => &["required"],
        SIGN_IN_WITH_X => &["nonce", "issuedAt", "expirationTime"],
        _ => &[],
    }
}

/// The `info` of an extension value, or the value itself when it has none (as the official server
/// reads it).
fn info_of(value: &Value) -> &Value {
    match value {
        Value::Object(map) => map.get("info").unwrap_or(value),
        other => other,
    }
}

/// JSON equality as JavaScript sees it after a round trip: `1` and `1.0` are one number.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|other| same(v, other)))
        }
        _ => a == b,
    }
}

/// The first place (a dotted path below `at`) where `echoed` does not contain `declared`.
fn first_change(declared: &Value, echoed: &Value, at: &str, skip: &[&str]) -> Option<String> {
    let Value::Object(declared) = declared else {
        return (!same(declared, echoed)).then(|| at.to_string());
    };
    let Value::Object(echoed) = echoed else {
        return Some(at.to_string());
    };
    declared
        .iter()
        .filter(|(key, _)| !skip.contains(&key.as_str()))
        .find_map(|(key, value)| {
            let path = format!("{at}.{key}");
            match echoed.get(key) {
                None => Some(path),
                Some(echo) => first_change(value, echo, &path, &[]),
            }
        })
}

/// Refuses a v2 payment (`raw`, as decoded from its header) whose `extensions` changes an
/// extension of `declared` (the challenge's extensions, by key). A payment that echoes nothing,
/// echoes a declared extension unchanged or adds to it, or sends extensions the route did not
/// declare, passes. v1 payments carry no extensions.
pub fn check_extension_echo(
    declared: &Map<String, Value>,
    raw: &Value,
) -> Result<(), PaymentRejection> {
    if raw.get("x402Version").and_then(Value::as_u64) != Some(2) {
        return Ok(());
    }
    let Some(echoed) = raw.get("extensions").and_then(Value::as_object) else {
        return Ok(());
    };
    for (key, echo) in echoed {
        let Some(advertised) = declared.get(key) else {
            continue;
        };
        let at = format!("extensions.{key}.info");
        if let Some(path) = first_change(info_of(advertised), info_of(echo), &at, free_fields(key))
        {
            return Err(reject(
                EXTENSION_ECHO_MISMATCH,
                format!("{path} differs from what this route declared: send the declared {key} extension back unchanged (or leave it out)"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared() -> Map<String, Value> {
        let value = json!({
            "payment-identifier": {"info": {"required": false}, "schema": {"type": "object"}},
            "bazaar": {
                "info": {
                    "input": {"type": "http", "method": "GET", "queryParams": {"city": "Paris"}},
                    "output": {"type": "json", "example": {"temp": 21.5, "n": 1}},
                },
                "schema": {"type": "object"},
                "routeTemplate": "/w/:id",
            },
        });
        value.as_object().cloned().unwrap()
    }

    fn payment(extensions: Value) -> Value {
        json!({"x402Version": 2, "accepted": {}, "payload": {}, "extensions": extensions})
    }

    #[test]
    fn an_unchanged_or_absent_echo_passes() {
        let d = declared();
        assert!(check_extension_echo(&d, &json!({"x402Version": 2})).is_ok());
        assert!(check_extension_echo(&d, &payment(json!({}))).is_ok());
        let whole = Value::Object(d.clone());
        assert!(check_extension_echo(&d, &payment(whole)).is_ok());
        // A JavaScript client writes 1.0 as 1; the schema and the template are not compared.
        let echo = json!({"bazaar": {
            "info": {
                "input": {"type": "http", "method": "GET", "queryParams": {"city": "Paris"}},
                "output": {"type": "json", "example": {"temp": 21.5, "n": 1.0}},
                "added": true,
            },
            "schema": {},
        }});
        assert!(check_extension_echo(&d, &payment(echo)).is_ok());
    }

    #[test]
    fn a_changed_echo_is_refused_naming_the_field() {
        let d = declared();
        let mut echo = Value::Object(d.clone());
        echo["bazaar"]["info"]["input"]["method"] = json!("POST");
        let refused = check_extension_echo(&d, &payment(echo)).unwrap_err();
        assert_eq!(refused.reason, EXTENSION_ECHO_MISMATCH);
        assert!(refused
            .message
            .contains("extensions.bazaar.info.input.method"));

        let mut dropped = Value::Object(d.clone());
        dropped["bazaar"]["info"]
            .as_object_mut()
            .unwrap()
            .remove("output");
        let refused = check_extension_echo(&d, &payment(dropped)).unwrap_err();
        assert!(refused.message.contains("extensions.bazaar.info.output"));

        let not_an_object = payment(json!({"bazaar": {"info": "x"}}));
        assert!(check_extension_echo(&d, &not_an_object).is_err());
    }

    #[test]
    fn payment_identifier_echoes_keep_working_without_required() {
        let d = declared();
        let id_only =
            payment(json!({"payment-identifier": {"info": {"id": "pay_0123456789abcdef"}}}));
        assert!(check_extension_echo(&d, &id_only).is_ok());
        let official = payment(json!({"payment-identifier": {
            "info": {"required": false, "id": "pay_0123456789abcdef"}, "schema": {}}}));
        assert!(check_extension_echo(&d, &official).is_ok());
    }

    #[test]
    fn a_sign_in_echo_may_carry_its_own_challenge_but_not_another_domain() {
        use crate::payment::sign_in::{sign_in_declaration, SignInChallenge};
        let networks = ["eip155:84532".to_string()];
        let challenge = |host: &str, nonce: &str, now_ms: i64| {
            sign_in_declaration(SignInChallenge {
                host,
                resource_url: "https://api.example.com/report",
                networks: &networks,
                nonce,
                now_ms,
                statement: None,
            })
        };
        let mut d = declared();
        d.insert(SIGN_IN_WITH_X.into(), challenge("api.example.com", "", 0));
        // What the client received in its 402: a fresh nonce and times of its own.
        let received = challenge("api.example.com", "9f2c41d0a7b3", 1_780_000_000_000);
        assert!(check_extension_echo(&d, &payment(json!({SIGN_IN_WITH_X: received}))).is_ok());
        let foreign = challenge("evil.example", "9f2c41d0a7b3", 1_780_000_000_000);
        let refused =
            check_extension_echo(&d, &payment(json!({SIGN_IN_WITH_X: foreign}))).unwrap_err();
        assert_eq!(refused.reason, EXTENSION_ECHO_MISMATCH);
        assert!(
            refused
                .message
                .contains("extensions.sign-in-with-x.info.domain"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn undeclared_extensions_and_v1_payments_are_not_held_to_anything() {
        let d = declared();
        assert!(check_extension_echo(&d, &payment(json!({"other": {"info": 1}}))).is_ok());
        let v1 = json!({"x402Version": 1, "extensions": {"bazaar": {"info": "x"}}});
        assert!(check_extension_echo(&d, &v1).is_ok());
        let no_bazaar: Map<String, Value> = d.into_iter().filter(|(k, _)| k != "bazaar").collect();
        assert!(
            check_extension_echo(&no_bazaar, &payment(json!({"bazaar": {"info": "x"}}))).is_ok()
        );
    }
}
