//! Challenge documents prepared once per route and configuration version. Between two 402s of a
//! route only the resource URL, the request method, the error and its message change, so those are
//! spliced as escaped JSON strings into text serialised at the route's first challenge.

use super::routes::PaymentOption;
use serde::Serialize;

/// The v1 requirement fields that do not depend on the request, in wire order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct V1Fixed<'a> {
    scheme: &'a str,
    network: &'a str,
    max_amount_required: &'a str,
    description: &'a str,
    mime_type: &'a str,
    pay_to: &'a str,
    max_timeout_seconds: u64,
    asset: &'a str,
    extra: &'a serde_json::Value,
}

const V1_METHOD: &str = r#","outputSchema":{"input":{"type":"http","method":"#;
const V1_TAIL: &str = r#","discoverable":true},"output":null}}"#;

#[derive(Debug, Clone)]
pub struct ChallengeTemplate {
    /// `,"description":…,"mimeType":…}` closing the v2 `resource` object.
    resource_tail: String,
    /// The v2 `accepts` array.
    accepts_v2: String,
    /// Each v1 option up to and including `"resource":`.
    v1_heads: Vec<String>,
}

fn json_string(text: &str) -> String {
    // Serialising a string cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

impl ChallengeTemplate {
    pub fn new(options: &[PaymentOption], description: &str, mime_type: &str) -> Self {
        let requirements: Vec<_> = options.iter().map(|o| &o.requirements).collect();
        let v1_heads = options
            .iter()
            .filter_map(|o| {
                let network = o.v1_network?;
                let r = &o.requirements;
                let fixed = serde_json::to_string(&V1Fixed {
                    scheme: &r.scheme,
                    network,
                    max_amount_required: &r.amount,
                    description,
                    mime_type,
                    pay_to: &r.pay_to,
                    max_timeout_seconds: r.max_timeout_seconds,
                    asset: &r.asset,
                    extra: &r.extra,
                })
                .ok()?;
                let open = fixed.strip_suffix('}')?;
                Some(format!(r#"{open},"resource":"#))
            })
            .collect();
        Self {
            resource_tail: format!(
                r#","description":{},"mimeType":{}}}"#,
                json_string(description),
                json_string(mime_type)
            ),
            accepts_v2: serde_json::to_string(&requirements).unwrap_or_else(|_| "[]".into()),
            v1_heads,
        }
    }

    /// The v2 `PaymentRequired` JSON (before base64).
    pub fn v2_json(&self, resource_url: &str, error: &str) -> String {
        format!(
            r#"{{"x402Version":2,"error":{},"resource":{{"url":{}{},"accepts":{}}}"#,
            json_string(error),
            json_string(resource_url),
            self.resource_tail,
            self.accepts_v2
        )
    }

    /// The v1 body: `{x402Version: 1, error, accepts, message?}` with options v1 clients know.
    pub fn v1_json(
        &self,
        resource_url: &str,
        method: &str,
        error: &str,
        message: Option<&str>,
    ) -> String {
        let url = json_string(resource_url);
        let method = json_string(method);
        let mut out =
            String::with_capacity(256 + self.v1_heads.iter().map(|h| h.len() + 128).sum::<usize>());
        out.push_str(r#"{"x402Version":1,"error":"#);
        out.push_str(&json_string(error));
        out.push_str(r#","accepts":["#);
        for (i, head) in self.v1_heads.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(head);
            out.push_str(&url);
            out.push_str(V1_METHOD);
            out.push_str(&method);
            out.push_str(V1_TAIL);
        }
        out.push(']');
        if let Some(message) = message {
            out.push_str(r#","message":"#);
            out.push_str(&json_string(message));
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::{PaymentRequired, PaymentRequiredV1, PaymentRequirements, ResourceInfo};
    use serde_json::{json, Value};

    fn option(network: &str, v1: Option<&'static str>) -> PaymentOption {
        PaymentOption {
            requirements: PaymentRequirements {
                scheme: "exact".into(),
                network: network.into(),
                amount: "10000".into(),
                asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
                pay_to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
                max_timeout_seconds: 60,
                extra: json!({"name": "USD\u{20AE}0", "version": "2"}),
            },
            chain_id: 84532,
            v1_network: v1,
            amount: 10_000,
            asset_symbol: "USDC".into(),
            decimals: 6,
            domain_separator: Default::default(),
        }
    }

    #[test]
    fn spliced_documents_equal_the_serialised_types() {
        let options = vec![
            option("eip155:84532", Some("base-sepolia")),
            option("eip155:196", None),
        ];
        let (description, mime) = ("Quotes \"live\" <b>", "application/json");
        let template = ChallengeTemplate::new(&options, description, mime);
        let url = "https://api.example.com/q?x=\"1\"";
        let error = "Payment required: \u{2028}";

        let expected_v2 = PaymentRequired {
            x402_version: 2,
            error: error.into(),
            resource: ResourceInfo {
                url: url.into(),
                description: description.into(),
                mime_type: mime.into(),
            },
            accepts: options.iter().map(|o| o.requirements.clone()).collect(),
        };
        let got: Value = serde_json::from_str(&template.v2_json(url, error)).unwrap();
        assert_eq!(got, serde_json::to_value(&expected_v2).unwrap());

        let expected_v1 = PaymentRequiredV1 {
            x402_version: 1,
            error: error.into(),
            accepts: options
                .iter()
                .filter_map(|o| o.v1_requirements(url, description, mime, "POST"))
                .collect(),
        };
        let got: Value = serde_json::from_str(&template.v1_json(url, "POST", error, None)).unwrap();
        assert_eq!(got, serde_json::to_value(&expected_v1).unwrap());
        let with_message: Value =
            serde_json::from_str(&template.v1_json(url, "POST", error, Some("why \"not\"")))
                .unwrap();
        assert_eq!(with_message["message"], "why \"not\"");
    }
}
