//! MCP (JSON-RPC over Streamable HTTP) messages as the x402 MCP transport prices them.
//!
//! Pure: parses a request body, says which priced item it names, takes the payment out of
//! `params._meta`, and builds the payment-required and settled results. No I/O here.

use serde_json::{json, Map, Value};

use super::PricedRoute;

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
    pub fn payment_required_reply(&self, challenge: Value) -> Value {
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
    pub fn settlement_failed_reply(&self, settlement: &Value) -> Value {
        let reason = settlement
            .get("errorReason")
            .and_then(Value::as_str)
            .unwrap_or("settlement failed");
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
    pub fn attach_settlement(&self, response: &mut Value, settlement: &Value) -> bool {
        let Some(result) = response.get_mut("result").and_then(Value::as_object_mut) else {
            return false;
        };
        let meta = result.entry("_meta").or_insert_with(|| json!({}));
        let Some(meta) = meta.as_object_mut() else {
            return false;
        };
        meta.insert(META_PAYMENT_RESPONSE.into(), settlement.clone());
        if self.extension_binding {
            result.insert("resultType".into(), json!("complete"));
        }
        true
    }
}

/// The kind of item a priced MCP entry names: `[[routes.tools]]`, `resources`, `prompts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpItemKind {
    Tool,
    Resource,
    Prompt,
}

impl McpItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Resource => "resource",
            Self::Prompt => "prompt",
        }
    }
}

impl McpItem {
    /// The kind and name (or URI) of a priceable item; `None` for what always passes through.
    pub fn key(&self) -> Option<(McpItemKind, &str)> {
        match self {
            Self::Tool(name) => Some((McpItemKind::Tool, name)),
            Self::Resource(uri) => Some((McpItemKind::Resource, uri)),
            Self::Prompt(name) => Some((McpItemKind::Prompt, name)),
            Self::PassThrough => None,
        }
    }
}

/// One priced tool, resource or prompt of an MCP route.
#[derive(Debug, Clone)]
pub struct McpPricedItem {
    pub kind: McpItemKind,
    /// The tool or prompt name, or the resource URI.
    pub name: String,
    pub priced: PricedRoute,
}

impl McpPricedItem {
    /// How logs, metrics and `check` name it: `tool search`.
    pub fn label(&self) -> String {
        format!("{} {}", self.kind.as_str(), self.name)
    }

    /// The resource URL its challenges name.
    pub fn resource_url(&self) -> String {
        match self.kind {
            McpItemKind::Tool => format!("mcp://tool/{}", self.name),
            McpItemKind::Prompt => format!("mcp://prompt/{}", self.name),
            McpItemKind::Resource => self.name.clone(),
        }
    }
}

/// An MCP server's endpoint (`mcp = true`): its priced items; every other item is free.
#[derive(Debug, Clone, Default)]
pub struct McpRoute {
    /// In file order: tools, then resources, then prompts.
    pub items: Vec<McpPricedItem>,
}

impl McpRoute {
    /// The priced entry for `item` and its position in [`McpRoute::items`], if it is priced.
    pub fn find(&self, item: &McpItem) -> Option<(usize, &McpPricedItem)> {
        let (kind, name) = item.key()?;
        self.items
            .iter()
            .enumerate()
            .find(|(_, i)| i.kind == kind && i.name == name)
    }
}

/// What the MCP server's response to a paid request says about charging for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpVerdict {
    /// A result that is not an error: the work was done and is paid for.
    Delivered,
    /// A JSON-RPC error or a tool result with `isError: true`: nothing is charged.
    Failed { reason: &'static str },
}

/// Judges the JSON-RPC response to a paid request.
pub fn judge_response(response: &Value) -> McpVerdict {
    match response.get("result") {
        Some(result) if result.get("isError").and_then(Value::as_bool) == Some(true) => {
            McpVerdict::Failed {
                reason: "tool_error",
            }
        }
        Some(_) => McpVerdict::Delivered,
        None => McpVerdict::Failed {
            reason: "jsonrpc_error",
        },
    }
}

/// Whether `message` is the response (result or error) to the request with `id`.
pub fn is_response_to(message: &Value, id: &Value) -> bool {
    message.get("id") == Some(id)
        && (message.get("result").is_some() || message.get("error").is_some())
}

/// A JSON-RPC error response of the gateway's own: `code` is the gateway's error code, kept in
/// `data` together with the HTTP status the HTTP path would have used.
pub fn gateway_error(id: &Value, status: u16, code: &str, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": GATEWAY_ERROR, "message": message, "data": {"error": code, "status": status}}})
}

/// JSON-RPC's implementation-defined server error range starts here.
const GATEWAY_ERROR: i64 = -32000;

/// One Server-Sent Events event, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event's bytes, blank line included, to pass on unchanged.
    pub raw: Vec<u8>,
    /// Its `data:` lines joined with `\n`, when it has any.
    pub data: Option<String>,
}

impl SseEvent {
    /// The same event with its data replaced by `data` (other fields kept, e.g. `id:`).
    pub fn with_data(&self, data: &str) -> Vec<u8> {
        let text = String::from_utf8_lossy(&self.raw);
        let mut out = String::with_capacity(text.len() + data.len());
        let mut written = false;
        for line in text.lines().filter(|l| !l.is_empty()) {
            if line == "data" || line.starts_with("data:") {
                if !written {
                    out.push_str("data: ");
                    out.push_str(data);
                    out.push('\n');
                    written = true;
                }
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        if !written {
            out.push_str("data: ");
            out.push_str(data);
            out.push('\n');
        }
        out.push('\n');
        out.into_bytes()
    }
}

/// Splits a Server-Sent Events stream into events as its bytes arrive.
#[derive(Debug, Default)]
pub struct SseSplitter {
    pending: Vec<u8>,
}

impl SseSplitter {
    pub fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    /// Bytes received that do not yet form a whole event.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Everything received that does not yet form a whole event, taken out.
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// The next whole event (ended by a blank line), if one has arrived.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let end = event_end(&self.pending)?;
        let raw: Vec<u8> = self.pending.drain(..end).collect();
        let text = String::from_utf8_lossy(&raw);
        let mut data: Option<String> = None;
        for line in text.split(['\n', '\r']) {
            let value = match line.strip_prefix("data") {
                Some("") => "",
                Some(rest) => match rest.strip_prefix(':') {
                    Some(v) => v.strip_prefix(' ').unwrap_or(v),
                    None => continue,
                },
                None => continue,
            };
            match data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            }
        }
        Some(SseEvent { raw, data })
    }
}

/// The end (exclusive) of the first event in `bytes`: after its blank line (`\n\n`, `\r\r`
/// or `\r\n\r\n`).
fn event_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut line_empty = true;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' || b == b'\r' {
            let next = if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                i + 2
            } else {
                i + 1
            };
            if b == b'\r' && next == i + 1 && i + 1 == bytes.len() {
                // A lone `\r` at the end may be the first half of `\r\n`.
                return None;
            }
            if line_empty {
                return Some(next);
            }
            line_empty = true;
            i = next;
        } else {
            line_empty = false;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(meta: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"search","arguments":{"q":"x"},"_meta":meta}}))
        .unwrap()
    }

    fn challenge() -> Value {
        json!({"x402Version": 2, "error": "payment required",
            "resource": {"url": "mcp://tool/search"}, "accepts": []})
    }

    fn settled(success: bool) -> Value {
        json!({"success": success, "transaction": "0xab", "network": "eip155:31337",
            "errorReason": if success { Value::Null } else { json!("insufficient_funds") }})
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
        let reply = request.payment_required_reply(challenge());
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
        let reply = request.payment_required_reply(challenge());
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

    #[test]
    fn refusals_render_as_challenge_withheld_result_or_gateway_error() {
        use crate::payment::{Answer, Receipt, Refusal};
        let request = McpRequest::parse(&call(json!({})), 4096).unwrap();
        let used = Refusal::new(402, "payment_already_used", "used")
            .with_challenge(challenge().to_string());
        assert_eq!(
            used.mcp_reply(&request),
            request.payment_required_reply(challenge())
        );
        assert!(used.carried_in_mcp_message());
        let receipt = Receipt {
            version: 2,
            encoded: crate::x402::encode_header_json(&settled(false)),
        };
        let refused = Answer::SettleRefused {
            reason: "insufficient_funds".into(),
        };
        let withheld = Refusal::withheld(&refused, Some(&receipt), "eip155:31337");
        assert_eq!(
            withheld.mcp_reply(&request),
            request.settlement_failed_reply(&settled(false))
        );
        assert!(withheld.carried_in_mcp_message());
        let error = Refusal::new(503, "replay_store_unavailable", "down").with_retry_after(1);
        let reply = error.mcp_reply(&request);
        assert_eq!(
            reply,
            gateway_error(&json!(7), 503, "replay_store_unavailable", "down")
        );
        assert_eq!(reply["error"]["data"]["status"], 503);
        assert!(!error.carried_in_mcp_message());
    }

    #[test]
    fn splits_events_whatever_the_line_ends_and_chunking() {
        let stream = b"event: message\r\nid: 1\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: ping\n\ndata: x\r\rtail";
        for step in [1, 3, stream.len()] {
            let mut splitter = SseSplitter::default();
            let mut events = Vec::new();
            for chunk in stream.chunks(step) {
                splitter.push(chunk);
                while let Some(event) = splitter.next_event() {
                    events.push(event);
                }
            }
            assert_eq!(events.len(), 3, "chunks of {step}");
            assert_eq!(events[0].data.as_deref(), Some("{\"a\":\n1}"));
            assert_eq!(events[1].data, None);
            assert_eq!(events[2].data.as_deref(), Some("x"));
            assert_eq!(splitter.pending_len(), 4);
            let joined: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
            assert_eq!(joined, stream[..stream.len() - 4].to_vec());
        }
    }

    #[test]
    fn rewritten_event_keeps_its_other_fields() {
        let mut splitter = SseSplitter::default();
        splitter.push(b"event: message\nid: 7\ndata: {}\n\n");
        let event = splitter.next_event().unwrap();
        let rewritten = event.with_data("{\"b\":2}");
        assert_eq!(
            String::from_utf8(rewritten).unwrap(),
            "event: message\nid: 7\ndata: {\"b\":2}\n\n"
        );
    }

    #[test]
    fn judges_results_errors_and_tool_errors() {
        let id = json!(7);
        let ok = json!({"jsonrpc":"2.0","id":7,"result":{"content":[]}});
        let tool_error = json!({"jsonrpc":"2.0","id":7,"result":{"isError":true,"content":[]}});
        let rpc_error = json!({"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"m"}});
        assert_eq!(judge_response(&ok), McpVerdict::Delivered);
        assert_eq!(
            judge_response(&tool_error),
            McpVerdict::Failed {
                reason: "tool_error"
            }
        );
        assert_eq!(
            judge_response(&rpc_error),
            McpVerdict::Failed {
                reason: "jsonrpc_error"
            }
        );
        assert!(is_response_to(&ok, &id));
        assert!(!is_response_to(&ok, &json!("7")));
        let progress = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{}});
        assert!(!is_response_to(&progress, &id));
    }
}
