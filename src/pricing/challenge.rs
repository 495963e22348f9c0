//! Challenge documents prepared once per route and configuration version. Between two 402s of a
//! route only the resource URL, the request method, the error and its message change, so those are
//! spliced as escaped JSON strings into text serialised at the route's first challenge.

use super::discovery::{Discovery, BAZAAR};
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

/// The `payment-identifier` extension: an optional id (16–128 of `A-Za-z0-9_-`) that makes a
/// resend of the same payment return the first response instead of paying twice.
const EXTENSIONS: &str = r#"{"payment-identifier":{"info":{"required":false},"schema":{"type":"object","properties":{"id":{"type":"string","minLength":16,"maxLength":128,"pattern":"^[A-Za-z0-9_-]+$"}},"required":["id"]}}}"#;

/// The extensions every challenge declares, by key (read once: payments are held to them).
pub(super) fn declared_extensions() -> &'static serde_json::Map<String, serde_json::Value> {
    static DECLARED: std::sync::LazyLock<serde_json::Map<String, serde_json::Value>> =
        // A constant document: it always reads as an object.
        std::sync::LazyLock::new(|| serde_json::from_str(EXTENSIONS).unwrap_or_default());
    &DECLARED
}

impl ChallengeTemplate {
    /// `discovery` adds the Bazaar catalog fields to the `resource` object of routes listed there;
    /// without it the documents are exactly those of a route that declares nothing.
    pub fn new(
        options: &[PaymentOption],
        description: &str,
        mime_type: &str,
        discovery: Option<&Discovery>,
    ) -> Self {
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
                r#","description":{},"mimeType":{}{}}}"#,
                json_string(description),
                json_string(mime_type),
                discovery
                    .map(Discovery::resource_members)
                    .unwrap_or_default()
            ),
            accepts_v2: serde_json::to_string(&requirements).unwrap_or_else(|_| "[]".into()),
            v1_heads,
        }
    }

    /// The v2 `PaymentRequired` JSON (before base64).
    /// It advertises the extensions the gateway implements ([`EXTENSIONS`]).
    pub fn v2_json(&self, resource_url: &str, error: &str) -> String {
        self.v2_json_declaring(resource_url, error, None)
    }

    /// [`Self::v2_json`] declaring the route's `bazaar` extension too, when it has one.
    pub fn v2_json_declaring(
        &self,
        resource_url: &str,
        error: &str,
        bazaar: Option<&serde_json::Value>,
    ) -> String {
        let extensions = match bazaar {
            None => EXTENSIONS.to_string(),
            Some(declaration) => {
                // EXTENSIONS is an object: its closing brace makes room for one more member.
                let open = EXTENSIONS.strip_suffix('}').unwrap_or(EXTENSIONS);
                format!(r#"{open},"{BAZAAR}":{declaration}}}"#)
            }
        };
        format!(
            r#"{{"x402Version":2,"error":{},"resource":{{"url":{}{},"accepts":{},"extensions":{extensions}}}"#,
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
        let template = ChallengeTemplate::new(&options, description, mime, None);
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
            extensions: Some(serde_json::from_str(EXTENSIONS).unwrap()),
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

    #[test]
    fn a_discoverable_route_adds_its_declaration_and_catalog_fields() {
        use crate::pricing::discovery::{InputDecl, ServiceMeta};
        let options = vec![option("eip155:84532", Some("base-sepolia"))];
        let discovery = Discovery {
            service: ServiceMeta {
                service_name: Some("Weather".into()),
                tags: vec!["weather".into()],
                icon_url: None,
            },
            input: InputDecl::Http {
                schema: None,
                example: None,
                body_type: "json".into(),
                route_template: None,
            },
            output: None,
        };
        let url = "https://api.example.com/w";
        let plain = ChallengeTemplate::new(&options, "d", "application/json", None);
        let listed = ChallengeTemplate::new(&options, "d", "application/json", Some(&discovery));
        let declaration = discovery.declaration("GET", url).unwrap();
        let got: Value =
            serde_json::from_str(&listed.v2_json_declaring(url, "e", Some(&declaration))).unwrap();
        let mut want: Value = serde_json::from_str(&plain.v2_json(url, "e")).unwrap();
        want["resource"]["serviceName"] = json!("Weather");
        want["resource"]["tags"] = json!(["weather"]);
        want["extensions"]["bazaar"] = declaration;
        assert_eq!(got, want);
        // The v1 body and a challenge without a declaration stay as they were.
        assert_eq!(
            listed.v1_json(url, "GET", "e", None),
            plain.v1_json(url, "GET", "e", None)
        );
        assert_eq!(
            plain.v2_json(url, "e"),
            plain.v2_json_declaring(url, "e", None)
        );
    }
}
