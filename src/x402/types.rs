//! Serde types of the x402 messages, field for field as on the wire.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// One way to pay for a resource (v2 `accepts[]` element; also the client's `accepted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    pub scheme: String,
    pub network: String,
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    #[serde(default = "empty_object")]
    pub extra: Value,
}

/// v1 flavour of [`PaymentRequirements`]: v1 network names, `maxAmountRequired`, per-option resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirementsV1 {
    pub scheme: String,
    pub network: String,
    pub max_amount_required: String,
    pub resource: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub description: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub mime_type: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub asset: String,
    #[serde(default)]
    pub output_schema: Option<Value>,
    #[serde(default = "empty_object")]
    pub extra: Value,
}

/// v2 `resource` object of a challenge. Only `url` is required on the wire; a missing or `null`
/// description or MIME type reads as empty (and is always written, since v1-era clients need it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub description: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub mime_type: String,
}

/// v2 challenge, carried base64-encoded in `PAYMENT-REQUIRED`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    pub x402_version: u8,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub error: String,
    pub resource: ResourceInfo,
    pub accepts: Vec<PaymentRequirements>,
    /// Extensions the server supports, by name (e.g. `payment-identifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Value>,
}

/// v1 challenge, carried in the 402 body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    pub x402_version: u8,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub error: String,
    pub accepts: Vec<PaymentRequirementsV1>,
}

/// EIP-3009 `TransferWithAuthorization` fields as a client sends them. Numbers are decimal strings
/// on the wire; some clients send JSON numbers, which are accepted and kept as their decimal text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    pub from: String,
    pub to: String,
    #[serde(deserialize_with = "decimal_text")]
    pub value: String,
    #[serde(deserialize_with = "decimal_text")]
    pub valid_after: String,
    #[serde(deserialize_with = "decimal_text")]
    pub valid_before: String,
    pub nonce: String,
}

/// The `exact` EVM payload: a signature over an EIP-3009 authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactEvmPayload {
    pub signature: String,
    pub authorization: Authorization,
}

/// The token and maximum amount an `upto` buyer lets Permit2 move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permit2TokenPermissions {
    pub token: String,
    #[serde(deserialize_with = "decimal_text")]
    pub amount: String,
}

/// The witness the `upto` proxy contract binds into the Permit2 signature: who is paid, which
/// facilitator may settle, and from when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UptoWitness {
    pub to: String,
    pub facilitator: String,
    #[serde(deserialize_with = "decimal_text")]
    pub valid_after: String,
}

/// A Permit2 `PermitWitnessTransferFrom` as an `upto` client sends it. Numbers are decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permit2Authorization {
    pub from: String,
    pub permitted: Permit2TokenPermissions,
    pub spender: String,
    #[serde(deserialize_with = "decimal_text")]
    pub nonce: String,
    #[serde(deserialize_with = "decimal_text")]
    pub deadline: String,
    pub witness: UptoWitness,
}

/// The `upto` EVM payload: a signature over a Permit2 witness transfer of at most the maximum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UptoEvmPayload {
    pub signature: String,
    pub permit2_authorization: Permit2Authorization,
}

/// v2 payment (`PAYMENT-SIGNATURE`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV2 {
    pub accepted: PaymentRequirements,
    pub payload: ExactEvmPayload,
}

/// v1 payment (`X-PAYMENT`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    pub scheme: String,
    pub network: String,
    pub payload: ExactEvmPayload,
}

/// v2 `upto` payment (`PAYMENT-SIGNATURE` with `accepted.scheme = "upto"`): a Permit2
/// authorization for a maximum.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadUpto {
    pub accepted: PaymentRequirements,
    pub payload: UptoEvmPayload,
}

/// The scheme of one EIP-3009 transfer for the exact price.
pub const EXACT: &str = "exact";

/// The scheme whose payloads are Permit2 authorizations for a maximum, settled by usage.
pub const UPTO: &str = "upto";

/// The scheme whose payments come from a deposit in an escrow channel, one voucher per request.
pub const BATCH_SETTLEMENT: &str = "batch-settlement";

/// v2 `batch-settlement` payment: a channel deposit, a voucher or a refund request, read by the
/// payment core's batch module (`payload` is kept as sent).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadBatch {
    pub accepted: PaymentRequirements,
    pub payload: Value,
}

/// A decoded payment of either protocol version.
#[derive(Debug, Clone)]
pub enum PaymentPayload {
    V1(PaymentPayloadV1),
    V2(PaymentPayloadV2),
    /// v2 only: `upto` has no v1 form.
    Upto(PaymentPayloadUpto),
    /// v2 only.
    Batch(PaymentPayloadBatch),
}

impl PaymentPayload {
    /// Picks the version from `x402Version`, then reads the matching shape.
    pub fn from_json(raw: &Value) -> Result<Self, String> {
        let version = raw
            .get("x402Version")
            .ok_or_else(|| "missing field `x402Version`".to_string())?
            .as_u64()
            .ok_or_else(|| "`x402Version` is not a number".to_string())?;
        match version {
            1 => PaymentPayloadV1::deserialize(raw)
                .map(Self::V1)
                .map_err(|e| e.to_string()),
            2 if raw.pointer("/accepted/scheme").and_then(Value::as_str)
                == Some(BATCH_SETTLEMENT) =>
            {
                PaymentPayloadBatch::deserialize(raw)
                    .map(Self::Batch)
                    .map_err(|e| e.to_string())
            }
            2 if raw.pointer("/accepted/scheme").and_then(Value::as_str) == Some(UPTO) => {
                PaymentPayloadUpto::deserialize(raw)
                    .map(Self::Upto)
                    .map_err(|e| e.to_string())
            }
            2 => PaymentPayloadV2::deserialize(raw)
                .map(Self::V2)
                .map_err(|e| e.to_string()),
            other => Err(format!("unsupported x402Version {other} (expected 1 or 2)")),
        }
    }

    pub fn version(&self) -> u8 {
        match self {
            Self::V1(_) => 1,
            Self::V2(_) | Self::Upto(_) | Self::Batch(_) => 2,
        }
    }

    /// The EIP-3009 authorization of an `exact` (or batch) payment; `None` for `upto`.
    pub fn exact(&self) -> Option<&ExactEvmPayload> {
        match self {
            Self::V1(p) => Some(&p.payload),
            Self::V2(p) => Some(&p.payload),
            Self::Upto(_) | Self::Batch(_) => None,
        }
    }

    pub fn scheme(&self) -> &str {
        match self {
            Self::V1(p) => &p.scheme,
            Self::V2(p) => &p.accepted.scheme,
            Self::Upto(p) => &p.accepted.scheme,
            Self::Batch(p) => &p.accepted.scheme,
        }
    }
}

/// Facilitator `/verify` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Scheme-specific facts (`batch-settlement`: the channel's on-chain state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// Facilitator `/settle` answer; also the decoded `PAYMENT-RESPONSE`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub transaction: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub network: String,
    /// Settlement state where the facilitator reports one (`pending`, `success`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The amount actually settled, in atomic units (`upto`: the charge, at most the maximum).
    /// Kept as written: what it says is judged from the raw answer, never by failing to read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Value>,
    /// Scheme-specific facts (`batch-settlement`: what was charged and the channel's state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// One (version, scheme, network) a facilitator offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    pub x402_version: u8,
    pub scheme: String,
    pub network: String,
    /// Scheme-specific facts, such as the address an `upto` facilitator settles from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// Facilitator `/supported` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupportedResponse {
    pub kinds: Vec<SupportedKind>,
}

impl SupportedResponse {
    /// The address a facilitator settles `upto` payments of `network` from (v2
    /// `extra.facilitatorAddress`): buyers bind it into their signature, so without it no `upto`
    /// challenge can be answered.
    pub fn upto_facilitator_address(&self, network: &str) -> Option<&str> {
        self.kinds
            .iter()
            .filter(|k| k.x402_version == 2 && k.scheme == "upto" && k.network == network)
            .find_map(|k| k.extra.as_ref()?.get("facilitatorAddress")?.as_str())
    }
}

impl SupportedResponse {
    /// The address a facilitator signs `batch-settlement` claims and refunds with on `network`
    /// (`extra.receiverAuthorizer`), when it offers to.
    pub fn batch_receiver_authorizer(&self, network: &str) -> Option<&str> {
        self.kinds
            .iter()
            .filter(|k| k.x402_version == 2 && k.scheme == BATCH_SETTLEMENT && k.network == network)
            .find_map(|k| k.extra.as_ref()?.get("receiverAuthorizer")?.as_str())
    }
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn decimal_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a decimal string, found {other}"
        ))),
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exact() -> Value {
        json!({"signature":"0xab","authorization":{"from":"0x1","to":"0x2","value":"10000",
            "validAfter":0,"validBefore":"1740672154","nonce":"0x00"}})
    }

    #[test]
    fn reads_both_versions_by_their_number() {
        let v1 =
            json!({"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":exact()});
        assert_eq!(PaymentPayload::from_json(&v1).unwrap().version(), 1);
        let v2 = json!({"x402Version":2,"accepted":{"scheme":"exact","network":"eip155:84532","amount":"1",
            "asset":"0xa","payTo":"0xb","maxTimeoutSeconds":60,"extra":{}},"payload":exact()});
        let p = PaymentPayload::from_json(&v2).unwrap();
        assert_eq!(
            p.exact().expect("exact").authorization.valid_after,
            "0",
            "numbers are kept as decimal text"
        );
    }

    #[test]
    fn an_upto_payment_is_read_by_its_accepted_scheme() {
        let v2 = json!({"x402Version":2,"accepted":{"scheme":"upto","network":"eip155:84532",
            "amount":"1000000","asset":"0xa","payTo":"0xb","maxTimeoutSeconds":60,"extra":{}},
            "payload":{"signature":"0xab","permit2Authorization":{"from":"0x1",
            "permitted":{"token":"0xa","amount":"1000000"},"spender":"0xc","nonce":"7",
            "deadline":"1900000000","witness":{"to":"0xb","facilitator":"0xd","validAfter":"0"}}}});
        let p = PaymentPayload::from_json(&v2).unwrap();
        assert!(matches!(p, PaymentPayload::Upto(_)));
        assert_eq!((p.version(), p.scheme()), (2, "upto"));
        assert!(p.exact().is_none());
        // An EIP-3009 payload is no `upto` payment.
        let exact_shaped = json!({"x402Version":2,"accepted":v2["accepted"],"payload":exact()});
        assert!(PaymentPayload::from_json(&exact_shaped)
            .unwrap_err()
            .contains("permit2Authorization"));
    }

    #[test]
    fn names_what_is_wrong_with_a_payload() {
        assert_eq!(
            PaymentPayload::from_json(&json!({})).unwrap_err(),
            "missing field `x402Version`"
        );
        assert!(PaymentPayload::from_json(&json!({"x402Version":3}))
            .unwrap_err()
            .contains("unsupported x402Version 3"));
        let err =
            PaymentPayload::from_json(&json!({"x402Version":2,"payload":exact()})).unwrap_err();
        assert!(err.contains("accepted"), "{err}");
    }

    #[test]
    fn challenges_without_optional_fields_are_read() {
        // The shape x402-axum 2.0 answers: no `error`, a `resource` without `description` or
        // `mimeType`, unknown `extensions`.
        let v2: PaymentRequired = serde_json::from_value(json!({"x402Version":2,
            "resource":{"url":"http://localhost/paid"},"extensions":{},
            "accepts":[{"scheme":"exact","network":"eip155:84532","amount":"10000",
                "asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                "payTo":"0x70997970C51812dc3A010C7d01b50e0d17dc79C8","maxTimeoutSeconds":300,
                "extra":{"name":"USDC","version":"2"}}]}))
        .unwrap();
        assert_eq!(v2.error, "");
        assert_eq!(v2.resource.url, "http://localhost/paid");
        assert_eq!(
            (
                v2.resource.description.as_str(),
                v2.resource.mime_type.as_str()
            ),
            ("", "")
        );
        assert_eq!(v2.accepts[0].extra["name"], "USDC");

        let nulls: ResourceInfo =
            serde_json::from_value(json!({"url":"u","description":null,"mimeType":null})).unwrap();
        assert_eq!(
            (nulls.description, nulls.mime_type),
            (String::new(), String::new())
        );
        let no_extra: PaymentRequirements = serde_json::from_value(json!({"scheme":"exact",
            "network":"eip155:84532","amount":"1","asset":"0xa","payTo":"0xb",
            "maxTimeoutSeconds":60}))
        .unwrap();
        assert_eq!(no_extra.extra, json!({}));

        let v1: PaymentRequiredV1 = serde_json::from_value(json!({"x402Version":1,
            "accepts":[{"scheme":"exact","network":"base-sepolia","maxAmountRequired":"1",
                "resource":"http://localhost/paid","payTo":"0xb","maxTimeoutSeconds":60,
                "asset":"0xa"}]}))
        .unwrap();
        let option = &v1.accepts[0];
        assert_eq!(
            (option.description.as_str(), option.mime_type.as_str()),
            ("", "")
        );
        assert_eq!(
            (option.output_schema.clone(), option.extra.clone()),
            (None, json!({}))
        );
    }

    #[test]
    fn required_fields_stay_required() {
        let no_url = serde_json::from_value::<ResourceInfo>(json!({"description":"d"}));
        assert!(no_url.unwrap_err().to_string().contains("url"));
        let no_accepts = serde_json::from_value::<PaymentRequired>(
            json!({"x402Version":2,"resource":{"url":"u"}}),
        );
        assert!(no_accepts.unwrap_err().to_string().contains("accepts"));
        let no_amount = serde_json::from_value::<PaymentRequirements>(json!({"scheme":"exact",
            "network":"eip155:84532","asset":"0xa","payTo":"0xb","maxTimeoutSeconds":60}));
        assert!(no_amount.unwrap_err().to_string().contains("amount"));
    }

    #[test]
    fn settle_response_tolerates_nulls() {
        let s: SettleResponse =
            serde_json::from_value(json!({"success":true,"transaction":null,"network":"x"}))
                .unwrap();
        assert_eq!(s.transaction, "");
    }
}
