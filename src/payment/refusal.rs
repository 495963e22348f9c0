//! A refusal of the gateway's own, typed: what went wrong (a code, the HTTP status, a message),
//! the challenge to pay with, the settlement answer that goes with it. One value, rendered as an
//! HTTP reply by the proxy or as an MCP JSON-RPC message ([`crate::pricing::mcp`]), so that both
//! paths say the same thing about the same money step and neither reads the other's output back.

use super::lifecycle::{Answer, Failure};
use crate::pricing::mcp::{gateway_error, McpRequest};
use crate::x402::{decode_header_json, PAYMENT_REQUIRED, PAYMENT_RESPONSE, X_PAYMENT_RESPONSE};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

/// The facilitator's settlement answer as the client receives it: the encoded header value of
/// the payment's protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub version: u8,
    /// Base64 JSON, as the settlement header carries it.
    pub encoded: String,
}

impl Receipt {
    /// `PAYMENT-RESPONSE` for v2 payments, `X-PAYMENT-RESPONSE` for v1.
    pub fn header_name(&self) -> &'static str {
        settlement_header(self.version)
    }

    /// The settlement answer itself (for the MCP `_meta`), when it can be read.
    pub fn decoded(&self) -> Option<Value> {
        decode_header_json::<Value>(self.encoded.as_bytes())
            .ok()
            .map(|(_, json)| json)
    }
}

/// The settlement header of a protocol version: `PAYMENT-RESPONSE` (v2), `X-PAYMENT-RESPONSE` (v1).
pub fn settlement_header(version: u8) -> &'static str {
    if version == 1 {
        X_PAYMENT_RESPONSE
    } else {
        PAYMENT_RESPONSE
    }
}

/// The facilitator's reason when a Permit2 payment's buyer has not approved Permit2 for the token.
pub const PERMIT2_ALLOWANCE_REQUIRED: &str = "permit2_allowance_required";

/// The HTTP status of a challenge sent for `error`: 412 when the buyer must approve Permit2 before
/// any payment can succeed (the official server's status, which its clients act on), 402 otherwise.
pub fn challenge_status(error: &str) -> u16 {
    if error == PERMIT2_ALLOWANCE_REQUIRED {
        412
    } else {
        402
    }
}

/// Why the gateway answers instead of delivering what was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status the HTTP path answers with.
    pub status: u16,
    /// The machine-readable error code.
    pub code: String,
    /// The only text a client reads about it.
    pub message: String,
    /// The x402 v2 `PaymentRequired` JSON, exactly as the challenge header encodes it: the client
    /// may pay (again).
    pub challenge: Option<String>,
    /// The settlement answer that goes with the refusal.
    pub receipt: Option<Receipt>,
    /// Seconds after which a retry may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
    /// The upstream did the work, but its content is withheld because the settlement did not
    /// succeed; this is the settlement answer (or one stating the failure) shown in its place.
    pub withheld: Option<Value>,
}

impl Refusal {
    /// The MCP form of this refusal, answering `request`: a challenge becomes a payment-required
    /// result, withheld content the settlement-failed result, anything else a JSON-RPC error
    /// carrying the gateway's error code and the HTTP status.
    pub fn mcp_reply(&self, request: &McpRequest) -> Value {
        if let Some(challenge) = &self.challenge {
            let challenge = serde_json::from_str(challenge).unwrap_or(Value::Null);
            return request.payment_required_reply(challenge);
        }
        if let Some(settlement) = &self.withheld {
            return request.settlement_failed_reply(settlement);
        }
        gateway_error(&request.id, self.status, &self.code, &self.message)
    }

    /// Whether the MCP form carries the challenge and settlement answer in the message itself;
    /// otherwise they go in the HTTP headers, as the HTTP path sends them.
    pub fn carried_in_mcp_message(&self) -> bool {
        self.challenge.is_some() || self.withheld.is_some()
    }

    pub fn new(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.to_string(),
            challenge: None,
            receipt: None,
            retry_after: None,
            withheld: None,
        }
    }

    pub fn with_challenge(mut self, payment_required: String) -> Self {
        self.challenge = Some(payment_required);
        self
    }

    pub fn with_receipt(mut self, receipt: Receipt) -> Self {
        self.receipt = Some(receipt);
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The refusal for a lifecycle answer that ends the request with an error of the payment
    /// (`Fail`, a duplicate in progress, `SettleRefused`), if it is one. `receipt` is the
    /// payment's settlement answer; it goes with the refusal where the answer says so.
    pub fn for_answer(answer: &Answer, receipt: Option<&Receipt>) -> Option<Self> {
        let with_receipt = |refusal: Self, wanted: bool| match (receipt, wanted) {
            (Some(r), true) => refusal.with_receipt(r.clone()),
            _ => refusal,
        };
        match answer {
            Answer::Fail { failure, receipt } => Some(with_receipt(
                Self::new(failure.status(), failure.code(), failure.message()),
                *receipt,
            )),
            Answer::Duplicate { settled: false } => Some(Self::new(
                409,
                "payment_in_progress",
                "this payment authorization is being used by another request",
            )),
            Answer::SettleRefused { reason } => Some(with_receipt(
                Self::new(
                    402,
                    reason,
                    &format!("the facilitator refused to settle the payment: {reason}"),
                ),
                true,
            )),
            _ => None,
        }
    }

    /// The refusal for a result the upstream produced whose settlement did not end in
    /// `Deliver`: the content is withheld. Any answer but `Deliver` lands here, so that nothing
    /// is delivered unless the lifecycle said so.
    pub fn withheld(answer: &Answer, receipt: Option<&Receipt>, network: &str) -> Self {
        let code = match answer {
            Answer::SettleRefused { reason } => reason.clone(),
            Answer::Fail { failure, .. } => failure.code().to_string(),
            _ => "settlement_failed".to_string(),
        };
        let settlement = receipt.and_then(Receipt::decoded).unwrap_or_else(|| {
            json!({"success": false, "errorReason": code, "transaction": "", "network": network})
        });
        let mut refusal = Self::for_answer(answer, receipt).unwrap_or_else(|| {
            Self::new(
                Failure::FacilitatorError.status(),
                &code,
                "the payment was not settled; the content is withheld",
            )
        });
        refusal.withheld = Some(settlement);
        refusal
    }

    /// The HTTP body: `{"error": code, "message": message}`.
    pub fn http_json(&self) -> Value {
        json!({"error": self.code, "message": self.message})
    }

    /// The HTTP headers: the challenge, the settlement answer, the pause before a retry.
    pub fn http_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(challenge) = &self.challenge {
            headers.push((PAYMENT_REQUIRED, STANDARD.encode(challenge)));
        }
        if let Some(receipt) = &self.receipt {
            headers.push((receipt.header_name(), receipt.encoded.clone()));
        }
        if let Some(seconds) = self.retry_after {
            headers.push(("Retry-After", seconds.to_string()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_permit2_allowance_is_412_and_every_other_challenge_402() {
        assert_eq!(challenge_status("permit2_allowance_required"), 412);
        for error in [
            "insufficient_funds",
            "permit2_simulation_failed",
            "payment_already_used",
            "",
        ] {
            assert_eq!(challenge_status(error), 402, "{error}");
        }
    }
    use crate::x402::encode_header_json;

    fn receipt(success: bool) -> Receipt {
        Receipt {
            version: 2,
            encoded: encode_header_json(&json!({"success": success, "transaction": "0xab",
                "network": "eip155:84532", "errorReason": if success { Value::Null } else { json!("insufficient_funds") }})),
        }
    }

    #[test]
    fn money_answers_become_refusals_with_the_receipt_where_the_lifecycle_says() {
        let r = receipt(false);
        let refused = Refusal::for_answer(
            &Answer::SettleRefused {
                reason: "insufficient_funds".into(),
            },
            Some(&r),
        )
        .unwrap();
        assert_eq!(
            (refused.status, refused.code.as_str()),
            (402, "insufficient_funds")
        );
        assert_eq!(
            refused.http_headers(),
            vec![(PAYMENT_RESPONSE, r.encoded.clone())]
        );
        let unconfirmed = Answer::Fail {
            failure: Failure::SettlementUnconfirmed,
            receipt: true,
        };
        let failed = Refusal::for_answer(&unconfirmed, Some(&r)).unwrap();
        assert_eq!(failed.status, 504);
        assert_eq!(failed.receipt.as_ref(), Some(&r));
        let journal = Answer::Fail {
            failure: Failure::JournalUnavailable,
            receipt: false,
        };
        assert_eq!(
            Refusal::for_answer(&journal, Some(&r)).unwrap().receipt,
            None
        );
        let busy = Refusal::for_answer(&Answer::Duplicate { settled: false }, None).unwrap();
        assert_eq!(
            (busy.status, busy.code.as_str()),
            (409, "payment_in_progress")
        );
        for answer in [
            Answer::Deliver,
            Answer::Forward,
            Answer::Nothing,
            Answer::Settle,
        ] {
            assert_eq!(Refusal::for_answer(&answer, Some(&r)), None, "{answer:?}");
        }
    }

    #[test]
    fn withheld_content_carries_the_settlement_answer_or_one_stating_the_failure() {
        let r = receipt(false);
        let refused = Answer::SettleRefused {
            reason: "insufficient_funds".into(),
        };
        let withheld = Refusal::withheld(&refused, Some(&r), "eip155:84532");
        assert_eq!(withheld.withheld, r.decoded());
        assert_eq!(withheld.status, 402);
        let not_sent = Answer::Fail {
            failure: Failure::FacilitatorUnavailable,
            receipt: false,
        };
        let withheld = Refusal::withheld(&not_sent, None, "eip155:84532");
        let settlement = withheld.withheld.unwrap();
        assert_eq!(settlement["success"], false);
        assert_eq!(settlement["errorReason"], "facilitator_unavailable");
        assert_eq!(settlement["network"], "eip155:84532");
        // Whatever the lifecycle answered, anything but `Deliver` withholds.
        let withheld = Refusal::withheld(&Answer::Nothing, None, "eip155:84532");
        assert_eq!(withheld.code, "settlement_failed");
        assert_eq!(
            withheld.withheld.unwrap()["errorReason"],
            "settlement_failed"
        );
    }

    #[test]
    fn http_form_is_the_error_body_and_the_headers_in_order() {
        let refusal = Refusal::new(503, "replay_store_unavailable", "down")
            .with_challenge("{\"x402Version\":2}".into())
            .with_receipt(Receipt {
                version: 1,
                encoded: "e30=".into(),
            })
            .with_retry_after(1);
        assert_eq!(
            refusal.http_json().to_string(),
            json!({"error": "replay_store_unavailable", "message": "down"}).to_string()
        );
        assert_eq!(
            refusal.http_headers(),
            vec![
                (PAYMENT_REQUIRED, STANDARD.encode("{\"x402Version\":2}")),
                (X_PAYMENT_RESPONSE, "e30=".to_string()),
                ("Retry-After", "1".to_string()),
            ]
        );
    }
}
