//! What a facilitator says about the extensions of a payment it verified or settled: the
//! `EXTENSION-RESPONSES` header (base64 JSON) or an `extensions` field of its answer, e.g.
//! `{"bazaar": {"status": "rejected", "rejectedReason": "..."}}` when a catalog refused the listing.
//! It concerns the seller, not the buyer: it is logged and never passed on.

use serde_json::Value;

/// The answer header carrying the reports.
pub const EXTENSION_RESPONSES: &str = "EXTENSION-RESPONSES";

/// One extension's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionReport {
    pub extension: String,
    /// `success`, `processing`, `rejected` (or whatever the facilitator wrote).
    pub status: String,
    pub rejected_reason: Option<String>,
}

impl ExtensionReport {
    pub fn rejected(&self) -> bool {
        self.status == "rejected"
    }
}

/// The reports of an `{extension: {status, rejectedReason?}}` object; entries of another shape are
/// reported with status `unreadable` rather than dropped.
pub fn reports(value: &Value) -> Vec<ExtensionReport> {
    let Some(map) = value.as_object() else {
        return Vec::new();
    };
    map.iter()
        .map(|(extension, report)| ExtensionReport {
            extension: extension.clone(),
            status: report
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unreadable")
                .to_string(),
            rejected_reason: report
                .get("rejectedReason")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
        .collect()
}

/// The reports of an `EXTENSION-RESPONSES` header value; an unreadable header yields none (and a
/// debug line), since it changes nothing about the payment.
pub fn header_reports(header: &[u8]) -> Vec<ExtensionReport> {
    match crate::x402::decode_header_json::<Value>(header) {
        Ok((value, _)) => reports(&value),
        Err(e) => {
            tracing::debug!(error = %e, "unreadable EXTENSION-RESPONSES header");
            Vec::new()
        }
    }
}

/// Logs `reports` of the facilitator `name`'s answer to `call` (`verify` or `settle`): a rejected
/// listing at warn with its reason, everything else at info.
pub fn log(name: &str, call: &str, reports: &[ExtensionReport]) {
    for r in reports {
        if r.rejected() {
            tracing::warn!(
                facilitator = %name,
                call,
                extension = %r.extension,
                reason = r.rejected_reason.as_deref().unwrap_or("none given"),
                "the facilitator rejected the payment's extension data"
            );
        } else {
            tracing::info!(facilitator = %name, call, extension = %r.extension, status = %r.status, "facilitator extension report");
        }
    }
}

/// Takes the `extensions` field out of a verify or settle answer (so that the settlement passed
/// on to the buyer never carries it) and returns its reports.
pub fn take_from_answer(answer: &mut Value) -> Vec<ExtensionReport> {
    answer
        .as_object_mut()
        .and_then(|obj| obj.remove("extensions"))
        .map(|v| reports(&v))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use serde_json::json;

    #[test]
    fn reports_are_read_from_the_header_and_the_answer() {
        let body = json!({"bazaar": {"status": "rejected", "rejectedReason": "schema invalid"}});
        let header = base64::engine::general_purpose::STANDARD.encode(body.to_string());
        let got = header_reports(header.as_bytes());
        assert_eq!(
            got,
            vec![ExtensionReport {
                extension: "bazaar".into(),
                status: "rejected".into(),
                rejected_reason: Some("schema invalid".into()),
            }]
        );
        assert!(got[0].rejected());
        assert!(header_reports(b"%%%").is_empty());

        let mut answer = json!({"success": true, "transaction": "0x1",
            "extensions": {"bazaar": {"status": "success"}, "odd": 1}});
        let got = take_from_answer(&mut answer);
        assert_eq!(answer, json!({"success": true, "transaction": "0x1"}));
        assert_eq!(got[0].status, "success");
        assert!(!got[0].rejected());
        assert_eq!(got[1].status, "unreadable");
    }
}
