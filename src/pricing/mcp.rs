//! MCP (JSON-RPC over Streamable HTTP) messages as the x402 MCP transport prices them.
//!
//! Pure: parses a request body, says which priced item it names, takes the payment out of
//! `params._meta`, and builds the payment-required and settled results. No I/O here.

use serde_json::{json, Map, Value};

use crate::x402::{PaymentRequired, SettleResponse};

/// `_meta` key carrying the client's payment.
pub const META_PAYMENT: &str = "x402/payment";
/// `_meta` key carrying the settlement on a paid result.
pub const META_PAYMENT_RESPONSE: &str = "x402/payment-response";
/// Client capability that selects the extension binding.
pub const EXTENSION_CAPABILITY: &str = "org.x402/payment";

/// JSON-RPC code for a request the gateway refuses before the MCP server sees it.
const INVALID_REQUEST: i64 = -32600;
const PARSE_ERROR: i64 = -32700;

/// What an MCP request asks for, as far as pricing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpItem {
    Tool(String),
    Resource(String),
    Prompt(String),
    /// `initialize`, `tools/list`, notifications, ...: never priced.
    PassThrough,
}

impl McpItem {
    /// Resource URL of the item in a challenge, e.g. `mcp://tool/search`.
    pub fn resource_url(&self) -> Option<String> {
        match self {
            Self::Tool(name) => Some(format!("mcp://tool/{name}")),
            Self::Resource(uri) => Some(uri.clone()),
            Self::Prompt(name) => Some(format!("mcp://prompt/{name}")),
            Self::PassThrough => None,
        }
    }
}

/// Why a body is refused; each maps to a JSON-RPC error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpRefusal {
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body is not JSON")]
    NotJson,
    #[error("JSON-RPC batches are not supported on priced MCP routes")]
    Batch,
    #[error("request is not a JSON-RPC object")]
    NotRequest,
}

impl McpRefusal {
    /// The JSON-RPC error object sent back for this refusal (`id` is unknown, so `null`).
    pub fn to_reply(&self) -> Value {
        let code = match self {
            Self::NotJson => PARSE_ERROR,
            _ => INVALID_REQUEST,
        };
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": self.to_string()}})
    }
}

/// A parsed MCP request with its payment (if any) already removed from `params._meta`.
#[derive(Debug, Clone)]
pub struct McpRequest {
    pub id: Value,
    pub item: McpItem,
    pub payment: Option<Value>,
    /// Per-request client capabilities advertise the x402 extension.
    pub extension_binding: bool,
    message: Value,
}

impl McpRequest {
    /// Parse `body`, refusing anything above `limit` bytes, batches and non-objects.
    pub fn parse(body: &[u8], limit: usize) -> Result<Self, McpRefusal> {
        if body.len() > limit {
            return Err(McpRefusal::TooLarge { limit });
        }
        let mut message: Value = serde_json::from_slice(body).map_err(|_| McpRefusal::NotJson)?;
        if message.is_array() {
            return Err(McpRefusal::Batch);
        }
        let object = message.as_object_mut().ok_or(McpRefusal::NotRequest)?;
        let id = object.get("id").cloned().unwrap_or(Value::Null);
        let method = object
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let params = object.get_mut("params").and_then(Value::as_object_mut);
        let text_param = |params: &Option<&mut Map<String, Value>>, key: &str| {
            params
                .as_ref()
                .and_then(|p| p.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let item = match method.as_str() {
            "tools/call" => text_param(&params, "name").map(McpItem::Tool),
            "resources/read" => text_param(&params, "uri").map(McpItem::Resource),
            "prompts/get" => text_param(&params, "name").map(McpItem::Prompt),
            _ => None,
        }
        .unwrap_or(McpItem::PassThrough);
        let (payment, extension_binding) = match params.and_then(|p| p.get_mut("_meta")) {
            Some(Value::Object(meta)) => {
                let payment = meta.remove(META_PAYMENT);
                let extension = meta
                    .get("io.modelcontextprotocol/clientCapabilities")
                    .or_else(|| meta.get("clientCapabilities"))
                    .and_then(|caps| caps.get("extensions").or(Some(caps)))
                    .is_some_and(|caps| caps.get(EXTENSION_CAPABILITY).is_some());
                (payment, extension)
            }
            _ => (None, false),
        };
        Ok(Self {
            id,
            item,
            payment,
            extension_binding,
            message,
        })
    }

    /// The request body to forward: the original message without `x402/payment`.
    pub fn forwarded_body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.message).unwrap_or_default()
    }

    /// The gateway's own reply when payment is required (tool-result or extension binding).
    pub fn payment_required_reply(&self, challenge: &PaymentRequired) -> Value {
        let challenge = serde_json::to_value(challenge).unwrap_or(Value::Null);
        let result = if self.extension_binding {
            json!({"resultType": "payment_required", "paymentRequired": challenge})
        } else {
            json!({
                "isError": true,
                "structuredContent": challenge,
                "content": [{"type": "text", "text": challenge.to_string()}],
            })
        };
        json!({"jsonrpc": "2.0", "id": self.id, "result": result})
    }

    /// The result to return when settlement failed after execution: the tool's content is withheld.
    pub fn settlement_failed_reply(&self, settlement: &SettleResponse) -> Value {
        let reason = settlement
            .error_reason
            .clone()
            .unwrap_or_else(|| "settlement failed".into());
        let mut result = json!({
            "isError": true,
            "content": [{"type": "text", "text": format!("payment settlement failed: {reason}")}],
            "_meta": {META_PAYMENT_RESPONSE: settlement},
        });
        if self.extension_binding {
            result["resultType"] = json!("complete");
        }
        json!({"jsonrpc": "2.0", "id": self.id, "result": result})
    }

    /// Add the settlement to a JSON-RPC response from the MCP server. Errors pass unchanged.
    pub fn attach_settlement(&self, response: &mut Value, settlement: &SettleResponse) -> bool {
        let Some(result) = response.get_mut("result").and_then(Value::as_object_mut) else {
            return false;
        };
        let meta = result.entry("_meta").or_insert_with(|| json!({}));
        let Some(meta) = meta.as_object_mut() else {
            return false;
        };
        meta.insert(
            META_PAYMENT_RESPONSE.into(),
            serde_json::to_value(settlement).unwrap_or(Value::Null),
        );
        if self.extension_binding {
            result.insert("resultType".into(), json!("complete"));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x402::ResourceInfo;

    fn call(meta: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"search","arguments":{"q":"x"},"_meta":meta}}))
        .unwrap()
    }

    fn challenge() -> PaymentRequired {
        PaymentRequired {
            x402_version: 2,
            error: "payment required".into(),
            resource: ResourceInfo {
                url: "mcp://tool/search".into(),
                description: String::new(),
                mime_type: String::new(),
            },
            accepts: vec![],
            extensions: None,
        }
    }

    fn settled(success: bool) -> SettleResponse {
        serde_json::from_value(json!({"success": success, "transaction": "0xab",
            "network": "eip155:31337", "errorReason": if success { Value::Null } else { json!("insufficient_funds") }}))
        .unwrap()
    }

    #[test]
    fn classifies_items_and_passes_the_rest_through() {
        let tool = McpRequest::parse(&call(json!({})), 1024).unwrap();
        assert_eq!(tool.item, McpItem::Tool("search".into()));
        assert_eq!(
            tool.item.resource_url().as_deref(),
            Some("mcp://tool/search")
        );
        let read =
            br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#;
        assert_eq!(
            McpRequest::parse(read, 1024).unwrap().item,
            McpItem::Resource("file:///a".into())
        );
        let prompt = br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}"#;
        assert_eq!(
            McpRequest::parse(prompt, 1024).unwrap().item,
            McpItem::Prompt("p".into())
        );
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#[..],
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
        ] {
            assert_eq!(
                McpRequest::parse(body, 1024).unwrap().item,
                McpItem::PassThrough
            );
        }
    }

    #[test]
    fn refuses_oversized_batches_and_garbage() {
        assert_eq!(
            McpRequest::parse(&call(json!({})), 10).unwrap_err(),
            McpRefusal::TooLarge { limit: 10 }
        );
        assert_eq!(McpRequest::parse(b"[]", 10).unwrap_err(), McpRefusal::Batch);
        assert_eq!(
            McpRequest::parse(b"{", 10).unwrap_err(),
            McpRefusal::NotJson
        );
        assert_eq!(
            McpRequest::parse(b"3", 10).unwrap_err(),
            McpRefusal::NotRequest
        );
        assert_eq!(McpRefusal::NotJson.to_reply()["error"]["code"], -32700);
        assert_eq!(McpRefusal::Batch.to_reply()["error"]["code"], -32600);
    }

    #[test]
    fn strips_the_payment_before_forwarding() {
        let request = McpRequest::parse(
            &call(json!({"x402/payment": {"x402Version": 2}, "k": 1})),
            4096,
        )
        .unwrap();
        assert_eq!(request.payment, Some(json!({"x402Version": 2})));
        let forwarded: Value = serde_json::from_slice(&request.forwarded_body()).unwrap();
        assert_eq!(forwarded["params"]["_meta"], json!({"k": 1}));
        assert_eq!(forwarded["params"]["arguments"], json!({"q": "x"}));
    }

    #[test]
    fn tool_result_binding_challenge() {
        let request = McpRequest::parse(&call(json!({})), 4096).unwrap();
        let reply = request.payment_required_reply(&challenge());
        assert_eq!(reply["id"], 7);
        assert_eq!(reply["result"]["isError"], true);
        assert_eq!(
            reply["result"]["structuredContent"]["resource"]["url"],
            "mcp://tool/search"
        );
        let text: Value =
            serde_json::from_str(reply["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text, reply["result"]["structuredContent"]);
    }

    #[test]
    fn extension_binding_challenge_and_result() {
        let caps = json!({"io.modelcontextprotocol/clientCapabilities": {"extensions": {"org.x402/payment": {}}}});
        let request = McpRequest::parse(&call(caps), 4096).unwrap();
        assert!(request.extension_binding);
        let reply = request.payment_required_reply(&challenge());
        assert_eq!(reply["result"]["resultType"], "payment_required");
        assert_eq!(reply["result"]["paymentRequired"]["x402Version"], 2);
        let mut response = json!({"jsonrpc":"2.0","id":7,"result":{"content":[]}});
        assert!(request.attach_settlement(&mut response, &settled(true)));
        assert_eq!(response["result"]["resultType"], "complete");
    }

    #[test]
    fn settlement_is_attached_or_content_withheld() {
        let request = McpRequest::parse(&call(json!({})), 4096).unwrap();
        let mut response =
            json!({"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"secret"}]}});
        assert!(request.attach_settlement(&mut response, &settled(true)));
        assert_eq!(
            response["result"]["_meta"]["x402/payment-response"]["transaction"],
            "0xab"
        );
        assert!(response["result"].get("resultType").is_none());
        let mut error = json!({"jsonrpc":"2.0","id":7,"error":{"code":1,"message":"m"}});
        assert!(!request.attach_settlement(&mut error, &settled(true)));
        let failed = request.settlement_failed_reply(&settled(false));
        assert_eq!(failed["result"]["isError"], true);
        assert!(!failed.to_string().contains("secret"));
        assert!(failed["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("insufficient_funds"));
    }
}
