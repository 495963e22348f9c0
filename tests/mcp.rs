//! Paid MCP tools: a real MCP server (the official TypeScript SDK over Streamable HTTP) behind the
//! gateway, the stub facilitator, and JSON-RPC over real sockets. Every test checks what the MCP
//! server executed and what the facilitator settled, not only what came back.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use x402_gateway::x402::PaymentRequirements;

const PROTOCOL: &str = "2025-06-18";

struct McpRig {
    mcp: Proc,
    facilitator: Proc,
    /// Replicas of one configuration when there are several.
    gateways: Vec<TestGateway>,
    /// The first gateway's public port.
    port: u16,
    journal: std::path::PathBuf,
    http: reqwest::Client,
}

/// What the gateway answered: the HTTP status and headers, and the JSON-RPC messages (one for a
/// JSON response, every event's for an SSE stream).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    messages: Vec<Value>,
}

impl Answer {
    /// The response message (the last one with a result or an error).
    fn response(&self) -> &Value {
        self.messages
            .iter()
            .rev()
            .find(|m| m.get("result").is_some() || m.get("error").is_some())
            .unwrap_or_else(|| panic!("no JSON-RPC response in {:?}", self.messages))
    }

    fn result(&self) -> &Value {
        &self.response()["result"]
    }

    fn is_sse(&self) -> bool {
        self.headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"))
    }
}

fn mcp_config(gateway: u16, admin: u16, mcp: u16, facilitator: u16, extra: &str) -> String {
    format!(
        r#"unmatched = "proxy"
[server]
listen = "127.0.0.1:{gateway}"
threads = 2
[admin]
listen = "127.0.0.1:{admin}"
[upstream]
url = "http://127.0.0.1:{mcp}"
[facilitator]
kind = "x402"
url = "http://127.0.0.1:{facilitator}"
timeout = "2s"
[defaults]
network = "eip155:84532"
pay_to = "{PAY_TO}"
max_timeout_seconds = 120
{extra}
[[routes]]
match = "* /mcp"
mcp = true
[[routes.tools]]
name = "search"
price = "$0.01"
description = "web search"
[[routes.tools]]
name = "premium"
price = "$0.05"
[[routes.tools]]
name = "broken"
price = "$0.01"
[[routes.resources]]
uri = "report://daily"
price = "$0.02"
[[routes.prompts]]
name = "advice"
price = "$0.01"

[[routes]]
match = "* /mcp-sse"
mcp = true
[[routes.tools]]
name = "search"
price = "$0.01"

# The MCP server answers here with HTTP 302 (its JSON-RPC body unchanged).
[[routes]]
match = "* /mcp-moved"
mcp = true
[[routes.tools]]
name = "search"
price = "$0.01"

# GET priced on its own: a POST body is read for `_method` first, then priced as MCP.
[[routes]]
match = "GET /mcp-both"
price = "$0.03"
[[routes]]
match = "* /mcp-both"
mcp = true
[[routes.tools]]
name = "search"
price = "$0.01"
"#
    )
}

impl McpRig {
    async fn start() -> Self {
        Self::start_with("", 1).await
    }

    /// `replicas` gateways of one configuration (with `extra` tables) in front of one MCP
    /// server, each with a journal of its own.
    async fn start_with(extra: &str, replicas: usize) -> Self {
        let mcp = node("mcp_server.mjs", &["--port", "0"]);
        let facilitator = node("facilitator.mjs", &["--port", "0"]);
        let dir = write_config("").parent().unwrap().to_path_buf();
        let journal = dir.join("journal.jsonl");
        let mut gateways = Vec::new();
        for replica in 0..replicas {
            let (port, admin) = (free_port(), free_port());
            let own_journal = dir.join(format!("journal-{replica}.jsonl"));
            let path = if replica == 0 { &journal } else { &own_journal };
            let extra = format!("{extra}\n[journal]\npath = \"{}\"\n", path.display());
            let config = mcp_config(port, admin, mcp.port, facilitator.port, &extra);
            gateways.push(
                TestGateway::builder(&config)
                    .name(format!("replica {replica}"))
                    .start(),
            );
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            mcp,
            facilitator,
            port: gateways[0].port,
            gateways,
            journal,
            http,
        }
    }

    /// The first gateway's journal lines.
    fn journal(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.journal)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn metrics(&self) -> String {
        let url = self.gateways[0].admin_url("/metrics");
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, session: Option<&str>, body: Vec<u8>) -> Answer {
        self.post_at(self.port, path, session, body).await
    }

    async fn post_at(&self, port: u16, path: &str, session: Option<&str>, body: Vec<u8>) -> Answer {
        let mut request = self
            .http
            .post(format!("http://127.0.0.1:{port}{path}"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL)
            .body(body);
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let sse = headers
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
        let messages = if sse {
            text.split("\n\n")
                .filter_map(|event| {
                    let data: Vec<&str> = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap())
                })
                .collect()
        } else if text.is_empty() {
            Vec::new()
        } else {
            vec![serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))]
        };
        Answer {
            status,
            headers,
            messages,
        }
    }

    async fn rpc(&self, path: &str, session: Option<&str>, message: Value) -> Answer {
        self.post(path, session, serde_json::to_vec(&message).unwrap())
            .await
    }

    /// Opens an MCP session on `path` through the gateway: its `Mcp-Session-Id`.
    async fn session(&self, path: &str) -> String {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "gateway-tests", "version": "1"}}});
        let answer = self.rpc(path, None, init).await;
        assert_eq!(answer.status, 200);
        assert!(answer.result()["serverInfo"]["name"].is_string());
        let session = answer.headers["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string();
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let answer = self.rpc(path, Some(&session), initialized).await;
        assert_eq!(answer.status, 202, "a notification is accepted");
        session
    }

    async fn call(
        &self,
        path: &str,
        session: &str,
        id: u64,
        tool: &str,
        arguments: Value,
        meta: Value,
    ) -> Answer {
        self.call_at(self.port, path, session, id, tool, arguments, meta)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn call_at(
        &self,
        port: u16,
        path: &str,
        session: &str,
        id: u64,
        tool: &str,
        arguments: Value,
        meta: Value,
    ) -> Answer {
        let mut params = json!({"name": tool, "arguments": arguments});
        if !meta.is_null() {
            params["_meta"] = meta;
        }
        let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
        self.post_at(
            port,
            path,
            Some(session),
            serde_json::to_vec(&message).unwrap(),
        )
        .await
    }

    /// Calls `tool` without a payment as request `id`: the payment-required object it answers.
    async fn challenge_for(
        &self,
        path: &str,
        session: &str,
        id: u64,
        tool: &str,
        arguments: Value,
    ) -> Value {
        challenge_of(
            &self
                .call(path, session, id, tool, arguments, Value::Null)
                .await,
        )
    }

    /// A payment signed for the challenge of an unpaid call to `tool` (request `id`).
    async fn payment_for_call(
        &self,
        path: &str,
        session: &str,
        id: u64,
        tool: &str,
        arguments: Value,
    ) -> Value {
        payment_for(&self.challenge_for(path, session, id, tool, arguments).await)
    }

    /// A whole paid call: unpaid as request `id` for the challenge, then paid as `id + 1` with
    /// the same arguments. Returns the payment (for resending) and the paid call's answer.
    async fn pay_and_call(
        &self,
        path: &str,
        session: &str,
        id: u64,
        tool: &str,
        arguments: Value,
    ) -> (Value, Answer) {
        let payment = self
            .payment_for_call(path, session, id, tool, arguments.clone())
            .await;
        let answer = self
            .call(path, session, id + 1, tool, arguments, paid(&payment))
            .await;
        (payment, answer)
    }

    async fn control(&self, path: &str) -> Value {
        self.http
            .get(format!("http://127.0.0.1:{}{path}", self.mcp.port))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn executions(&self, tool: &str) -> u64 {
        self.control("/__executions").await[tool]
            .as_u64()
            .unwrap_or(0)
    }

    /// Facilitator call counts: (verify, settle).
    async fn facilitator_calls(&self) -> (u64, u64) {
        let v: Value = self
            .http
            .get(format!(
                "http://127.0.0.1:{}/__calls",
                self.facilitator.port
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v["verify"].as_u64().unwrap(), v["settle"].as_u64().unwrap())
    }

    async fn facilitator_mode(&self, modes: Value) {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}/__mode", self.facilitator.port))
            .json(&modes)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

/// The payment-required object of a tool-result binding challenge.
fn challenge_of(answer: &Answer) -> Value {
    let result = answer.result();
    assert_eq!(
        result["isError"], true,
        "a payment-required result: {result}"
    );
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        text, result["structuredContent"],
        "text and structured agree"
    );
    result["structuredContent"].clone()
}

/// A signed `PaymentPayload` (JSON, as `_meta["x402/payment"]` carries it) for the first option.
fn payment_for(challenge: &Value) -> Value {
    let requirements: PaymentRequirements =
        serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
    decode_b64_json(&sign_v2(&requirements, |_| {}))
}

fn paid(payment: &Value) -> Value {
    json!({"x402/payment": payment})
}

#[tokio::test]
async fn an_unpaid_priced_call_gets_a_payment_required_result_and_the_tool_never_runs() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let answer = rig
        .call(
            "/mcp",
            &session,
            1,
            "search",
            json!({"q": "rust"}),
            Value::Null,
        )
        .await;
    assert_eq!(answer.status, 200, "a JSON-RPC result, not an HTTP 402");
    assert_eq!(answer.response()["id"], 1);
    let challenge = challenge_of(&answer);
    assert_eq!(challenge["x402Version"], 2);
    assert_eq!(challenge["resource"]["url"], "mcp://tool/search");
    assert_eq!(challenge["accepts"][0]["amount"], "10000");
    assert_eq!(challenge["accepts"][0]["payTo"], PAY_TO);
    assert_eq!(rig.executions("search").await, 0);
    assert_eq!(rig.facilitator_calls().await, (0, 0));

    // The other priced items, each with its own price and resource URL.
    let premium = rig
        .call(
            "/mcp",
            &session,
            2,
            "premium",
            json!({"q": "x"}),
            Value::Null,
        )
        .await;
    assert_eq!(challenge_of(&premium)["accepts"][0]["amount"], "50000");
    let read = json!({"jsonrpc": "2.0", "id": 3, "method": "resources/read",
        "params": {"uri": "report://daily"}});
    let report = challenge_of(&rig.rpc("/mcp", Some(&session), read).await);
    assert_eq!(report["resource"]["url"], "report://daily");
    assert_eq!(report["accepts"][0]["amount"], "20000");
    let get = json!({"jsonrpc": "2.0", "id": 4, "method": "prompts/get",
        "params": {"name": "advice"}});
    let advice = challenge_of(&rig.rpc("/mcp", Some(&session), get).await);
    assert_eq!(advice["resource"]["url"], "mcp://prompt/advice");
    assert_eq!(rig.executions("premium").await, 0);
    assert_eq!(rig.executions("report").await, 0);
    assert_eq!(rig.executions("advice").await, 0);
}

#[tokio::test]
async fn a_paid_call_runs_once_settles_once_and_carries_the_settlement() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let payment = rig
        .payment_for_call("/mcp", &session, 1, "search", json!({"q": "rust"}))
        .await;
    let answer = rig
        .call(
            "/mcp",
            &session,
            2,
            "search",
            json!({"q": "rust"}),
            json!({"x402/payment": payment, "progressToken": "keep-me"}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let result = answer.result();
    assert_eq!(answer.response()["id"], 2);
    assert_ne!(result["isError"], true, "{result}");
    assert_eq!(result["content"][0]["text"], "secret results for rust");
    let settlement = &result["_meta"]["x402/payment-response"];
    assert_eq!(settlement["success"], true, "{result}");
    assert!(settlement["transaction"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    assert_eq!(rig.executions("search").await, 1);
    assert_eq!(rig.facilitator_calls().await, (1, 1));

    // What the MCP server received: no payment, everything else as sent, the session kept.
    let last = rig.control("/__last").await;
    assert!(last["body"]["params"]["_meta"]
        .get("x402/payment")
        .is_none());
    assert_eq!(last["body"]["params"]["_meta"]["progressToken"], "keep-me");
    assert_eq!(last["body"]["params"]["arguments"]["q"], "rust");
    assert_eq!(last["headers"]["mcp-session-id"], session.as_str());
    let payer = last["headers"]["x-payment-payer"].as_str().unwrap_or("");
    assert!(
        payer.starts_with("0x") && payer.len() == 42,
        "the verified payer: {last}"
    );
}

#[tokio::test]
async fn free_tools_listing_and_session_requests_pass_through_untouched() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let list = rig
        .rpc(
            "/mcp",
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
    let names: Vec<&str> = list.result()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"search") && names.contains(&"echo"),
        "{names:?}"
    );
    let echo = rig
        .call(
            "/mcp",
            &session,
            2,
            "echo",
            json!({"text": "hi"}),
            Value::Null,
        )
        .await;
    assert_eq!(echo.result()["content"][0]["text"], "hi");
    assert!(echo.result()["_meta"]
        .get("x402/payment-response")
        .is_none());
    assert_eq!(rig.executions("echo").await, 1);
    assert_eq!(rig.facilitator_calls().await, (0, 0));
    let last = rig.control("/__last").await;
    assert_eq!(last["headers"]["mcp-session-id"], session.as_str());
    // A session the server does not know is the server's to refuse.
    let unknown = rig
        .call(
            "/mcp",
            "no-such-session",
            3,
            "echo",
            json!({"text": "x"}),
            Value::Null,
        )
        .await;
    assert_eq!(unknown.status, 404);
    // Ending the session (DELETE) reaches the server, which forgets it.
    let ended = rig
        .http
        .delete(format!("http://127.0.0.1:{}/mcp", rig.port))
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", PROTOCOL)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), 200);
    let after = rig
        .call(
            "/mcp",
            &session,
            4,
            "echo",
            json!({"text": "x"}),
            Value::Null,
        )
        .await;
    assert_eq!(after.status, 404, "the session was ended at the server");
}

#[tokio::test]
async fn a_replayed_payment_is_refused_and_the_tool_runs_once() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let (payment, first) = rig
        .pay_and_call("/mcp", &session, 1, "search", json!({"q": "a"}))
        .await;
    assert_eq!(
        first.result()["_meta"]["x402/payment-response"]["success"],
        true
    );
    for id in 3..5 {
        let again = rig
            .call(
                "/mcp",
                &session,
                id,
                "search",
                json!({"q": "a"}),
                paid(&payment),
            )
            .await;
        let refused = challenge_of(&again);
        assert_eq!(refused["error"], "payment_already_used", "{refused}");
    }
    assert_eq!(rig.executions("search").await, 1);
    assert_eq!(rig.facilitator_calls().await, (1, 1));
}

#[tokio::test]
async fn tampered_and_mispriced_payments_never_run_the_tool() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let cheap = rig
        .challenge_for("/mcp", &session, 1, "search", json!({"q": "a"}))
        .await;
    // Signed, then the value raised: the signature no longer matches.
    let mut tampered = payment_for(&cheap);
    tampered["payload"]["authorization"]["value"] = json!("50000");
    let answer = rig
        .call(
            "/mcp",
            &session,
            2,
            "premium",
            json!({"q": "a"}),
            paid(&tampered),
        )
        .await;
    assert_eq!(challenge_of(&answer)["accepts"][0]["amount"], "50000");
    // A valid payment for the cheap tool, sent to the dear one.
    let cheap_payment = payment_for(&cheap);
    let answer = rig
        .call(
            "/mcp",
            &session,
            3,
            "premium",
            json!({"q": "a"}),
            paid(&cheap_payment),
        )
        .await;
    let refused = challenge_of(&answer);
    assert_ne!(refused["error"], "", "{refused}");
    // Garbage in the payment slot.
    let answer = rig
        .call(
            "/mcp",
            &session,
            4,
            "search",
            json!({"q": "a"}),
            paid(&json!("nonsense")),
        )
        .await;
    assert_eq!(challenge_of(&answer)["error"], "invalid_payment");
    assert_eq!(rig.executions("premium").await, 0);
    assert_eq!(rig.executions("search").await, 0);
    assert_eq!(rig.facilitator_calls().await, (0, 0));
    // The cheap payment still pays for the cheap tool: refusing it elsewhere did not burn it.
    let answer = rig
        .call(
            "/mcp",
            &session,
            5,
            "search",
            json!({"q": "a"}),
            paid(&cheap_payment),
        )
        .await;
    assert_eq!(
        answer.result()["_meta"]["x402/payment-response"]["success"],
        true
    );
    assert_eq!(rig.executions("search").await, 1);
}

#[tokio::test]
async fn a_failed_settlement_withholds_the_content_and_a_tool_error_charges_nothing() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let payment = rig
        .payment_for_call("/mcp", &session, 1, "search", json!({"q": "a"}))
        .await;
    rig.facilitator_mode(json!({"settle": "invalid"})).await;
    let answer = rig
        .call(
            "/mcp",
            &session,
            2,
            "search",
            json!({"q": "a"}),
            paid(&payment),
        )
        .await;
    let result = answer.result();
    assert_eq!(result["isError"], true, "{result}");
    assert!(
        !answer.response().to_string().contains("secret"),
        "{result}"
    );
    assert_eq!(
        result["_meta"]["x402/payment-response"]["success"], false,
        "{result}"
    );
    assert_eq!(rig.executions("search").await, 1, "the tool ran");
    assert_eq!(rig.facilitator_calls().await, (1, 1));

    // A tool that reports an error: delivered as it is, never settled.
    rig.facilitator_mode(json!({"settle": "normal"})).await;
    let (_, answer) = rig
        .pay_and_call("/mcp", &session, 3, "broken", json!({}))
        .await;
    assert_eq!(answer.result()["isError"], true);
    assert_eq!(answer.result()["content"][0]["text"], "the tool failed");
    assert!(answer.result().get("_meta").is_none());
    assert_eq!(rig.executions("broken").await, 1);
    assert_eq!(
        rig.facilitator_calls().await,
        (2, 1),
        "verified, not settled"
    );
}

#[tokio::test]
async fn sse_responses_stream_notifications_and_settle_in_the_final_event() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp-sse").await;
    let challenge = rig
        .challenge_for("/mcp-sse", &session, 1, "search", json!({"q": "s"}))
        .await;
    assert_eq!(rig.executions("search").await, 0);
    let answer = rig
        .call(
            "/mcp-sse",
            &session,
            2,
            "search",
            json!({"q": "s"}),
            paid(&payment_for(&challenge)),
        )
        .await;
    assert!(answer.is_sse(), "{:?}", answer.headers);
    assert_eq!(answer.messages.len(), 2, "{:?}", answer.messages);
    assert_eq!(answer.messages[0]["method"], "notifications/message");
    let result = answer.result();
    assert_eq!(result["content"][0]["text"], "secret results for s");
    assert_eq!(result["_meta"]["x402/payment-response"]["success"], true);
    assert_eq!(rig.executions("search").await, 1);
    assert_eq!(rig.facilitator_calls().await, (1, 1));

    // Settlement refused on a stream: the final event withholds the content.
    rig.facilitator_mode(json!({"settle": "invalid"})).await;
    let answer = rig
        .call(
            "/mcp-sse",
            &session,
            3,
            "search",
            json!({"q": "s"}),
            paid(&payment_for(&challenge)),
        )
        .await;
    assert!(answer.is_sse());
    assert_eq!(answer.result()["isError"], true);
    assert!(!answer.response().to_string().contains("secret"));
    assert_eq!(rig.executions("search").await, 2);
}

#[tokio::test]
async fn oversized_bodies_batches_and_garbage_are_refused_before_the_server() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "x".repeat(70 * 1024)}}});
    let answer = rig.rpc("/mcp", Some(&session), big).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.response()["error"]["code"], -32600);
    let batch = json!([{"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "search", "arguments": {"q": "a"}}}]);
    let answer = rig.rpc("/mcp", Some(&session), batch).await;
    assert_eq!(answer.status, 400);
    assert!(answer.response()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("batch"));
    let answer = rig
        .post("/mcp", Some(&session), b"{not json".to_vec())
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.response()["error"]["code"], -32700);
    assert_eq!(rig.executions("echo").await, 0);
    assert_eq!(rig.executions("search").await, 0);
}

#[tokio::test]
async fn the_extension_binding_answers_payment_required_and_complete() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let capabilities = json!({"io.modelcontextprotocol/clientCapabilities":
        {"extensions": {"org.x402/payment": {}}}});
    let answer = rig
        .call(
            "/mcp",
            &session,
            1,
            "search",
            json!({"q": "e"}),
            capabilities.clone(),
        )
        .await;
    let result = answer.result();
    assert_eq!(result["resultType"], "payment_required", "{result}");
    let challenge = result["paymentRequired"].clone();
    assert_eq!(challenge["resource"]["url"], "mcp://tool/search");
    assert_eq!(rig.executions("search").await, 0);
    let mut meta = capabilities;
    meta["x402/payment"] = payment_for(&challenge);
    let answer = rig
        .call("/mcp", &session, 2, "search", json!({"q": "e"}), meta)
        .await;
    let result = answer.result();
    assert_eq!(result["resultType"], "complete", "{result}");
    assert_eq!(result["_meta"]["x402/payment-response"]["success"], true);
    assert_eq!(rig.executions("search").await, 1);
}

#[tokio::test]
async fn a_paid_call_is_journaled_and_counted_under_its_tool() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let (_, answer) = rig
        .pay_and_call("/mcp", &session, 1, "search", json!({"q": "j"}))
        .await;
    let tx = answer.result()["_meta"]["x402/payment-response"]["transaction"].clone();
    let journal = rig.journal();
    let states: Vec<&str> = journal
        .iter()
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["verified", "settled"], "{journal:?}");
    assert!(journal.iter().all(|l| l["route"] == "* /mcp tool search"));
    assert_eq!(journal[1]["transaction"], tx);
    assert_eq!(journal[1]["amount"], "10000");
    let metrics = rig.metrics().await;
    let line = |prefix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        line(
            r#"x402_revenue_atomic_total{asset="USDC",network="eip155:84532",route="* /mcp tool search"}"#
        ),
        "10000"
    );
    assert_eq!(
        line(r#"x402_payment_required_total{route="* /mcp tool search"}"#),
        "1"
    );
    assert_eq!(
        line(r#"x402_requests_total{outcome="paid",route="* /mcp tool search"}"#),
        "1"
    );
}

#[tokio::test]
async fn a_resent_payment_with_an_identifier_gets_its_result_back_under_the_new_id() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let mut payment = rig
        .payment_for_call("/mcp", &session, 1, "search", json!({"q": "i"}))
        .await;
    payment["extensions"] =
        json!({"payment-identifier": {"info": {"id": "mcp-retry-0123456789abcdef"}}});
    let first = rig
        .call(
            "/mcp",
            &session,
            2,
            "search",
            json!({"q": "i"}),
            paid(&payment),
        )
        .await;
    assert_eq!(
        first.result()["_meta"]["x402/payment-response"]["success"],
        true
    );
    let again = rig
        .call(
            "/mcp",
            &session,
            3,
            "search",
            json!({"q": "i"}),
            paid(&payment),
        )
        .await;
    assert_eq!(again.response()["id"], 3, "the resend's own id");
    assert_eq!(
        again.result(),
        first.result(),
        "the same result, settlement included"
    );
    assert_eq!(rig.executions("search").await, 1);
    assert_eq!(rig.facilitator_calls().await, (1, 1));
}

#[tokio::test]
async fn replicas_sharing_redis_run_a_payment_once_whichever_gets_it() {
    let prefix = format!("mcp-test-{}-{}:", std::process::id(), now());
    let redis = format!("[redis]\nurl = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\n");
    let rig = McpRig::start_with(&redis, 2).await;
    let session = rig.session("/mcp").await;
    let payment = rig
        .payment_for_call("/mcp", &session, 1, "search", json!({"q": "r"}))
        .await;
    let (a, b) = tokio::join!(
        rig.call_at(
            rig.gateways[0].port,
            "/mcp",
            &session,
            2,
            "search",
            json!({"q": "r"}),
            paid(&payment)
        ),
        rig.call_at(
            rig.gateways[1].port,
            "/mcp",
            &session,
            3,
            "search",
            json!({"q": "r"}),
            paid(&payment)
        ),
    );
    let settled = [&a, &b]
        .iter()
        .filter(|answer| {
            answer.response()["result"]["_meta"]["x402/payment-response"]["success"] == true
        })
        .count();
    assert_eq!(settled, 1, "{:?} {:?}", a.messages, b.messages);
    // Later copies, at either replica, are refused as used.
    for (id, port) in [(4, rig.gateways[0].port), (5, rig.gateways[1].port)] {
        let again = rig
            .call_at(
                port,
                "/mcp",
                &session,
                id,
                "search",
                json!({"q": "r"}),
                paid(&payment),
            )
            .await;
        assert_eq!(challenge_of(&again)["error"], "payment_already_used");
    }
    assert_eq!(rig.executions("search").await, 1);
    assert_eq!(rig.facilitator_calls().await.1, 1, "settled once");
}

#[tokio::test]
async fn check_and_discovery_list_the_priced_items() {
    let rig = McpRig::start().await;
    let config = mcp_config(
        free_port(),
        free_port(),
        rig.mcp.port,
        rig.facilitator.port,
        "",
    );
    let out = std::process::Command::new(gateway_bin())
        .arg("check")
        .arg(write_config(&config))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("* /mcp") && stdout.contains("mcp: 5 priced item(s)"),
        "{stdout}"
    );
    for item in [
        "tool search",
        "tool premium",
        "resource report://daily",
        "prompt advice",
    ] {
        assert!(stdout.contains(item), "`{item}` in\n{stdout}");
    }
    let discovery: Value = rig
        .http
        .get(format!("http://127.0.0.1:{}/.well-known/x402", rig.port))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<(String, String)> = discovery["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"] == "* /mcp")
        .map(|r| {
            (
                r["resource"].as_str().unwrap().to_string(),
                r["accepts"][0]["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("mcp://tool/search", "10000"),
        ("mcp://tool/premium", "50000"),
        ("mcp://tool/broken", "10000"),
        ("report://daily", "20000"),
        ("mcp://prompt/advice", "10000"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn a_body_read_for_a_method_override_is_priced_and_forwarded_once_read() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp-both").await;
    let unpaid = rig
        .call(
            "/mcp-both",
            &session,
            1,
            "search",
            json!({"q": "b"}),
            Value::Null,
        )
        .await;
    assert_eq!(challenge_of(&unpaid)["accepts"][0]["amount"], "10000");
    let echo = rig
        .call(
            "/mcp-both",
            &session,
            2,
            "echo",
            json!({"text": "whole"}),
            Value::Null,
        )
        .await;
    assert_eq!(echo.result()["content"][0]["text"], "whole");
    assert_eq!(rig.executions("search").await, 0);
    assert_eq!(rig.executions("echo").await, 1);
}

#[tokio::test]
async fn a_paid_call_answered_with_a_redirect_withholds_its_content_when_settlement_fails() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let payment = rig
        .payment_for_call("/mcp-moved", &session, 1, "search", json!({"q": "m"}))
        .await;
    rig.facilitator_mode(json!({"settle": "invalid"})).await;
    let answer = rig
        .call(
            "/mcp-moved",
            &session,
            2,
            "search",
            json!({"q": "m"}),
            paid(&payment),
        )
        .await;
    // The gateway's settlement-failed result, as for a 200 answer: nothing of the server's.
    assert_eq!(answer.status, 200, "{:?}", answer.messages);
    assert_eq!(answer.messages.len(), 1, "{:?}", answer.messages);
    assert_eq!(answer.response()["id"], 2);
    let result = answer.result();
    assert_eq!(result["isError"], true, "{result}");
    assert!(
        !answer.response().to_string().contains("secret"),
        "{result}"
    );
    assert_eq!(
        result["_meta"]["x402/payment-response"]["success"], false,
        "{result}"
    );
    assert_eq!(rig.executions("search").await, 1, "the tool ran");
    assert_eq!(
        rig.facilitator_calls().await,
        (1, 1),
        "settle was tried once"
    );
    let states: Vec<String> = rig
        .journal()
        .iter()
        .map(|l| l["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["verified", "failed"]);

    // Nothing moved: the same authorization pays for a later call.
    rig.facilitator_mode(json!({"settle": "normal"})).await;
    let again = rig
        .call(
            "/mcp",
            &session,
            3,
            "search",
            json!({"q": "m"}),
            paid(&payment),
        )
        .await;
    assert_eq!(
        again.result()["_meta"]["x402/payment-response"]["success"],
        true,
        "{:?}",
        again.messages
    );
    assert_eq!(rig.executions("search").await, 2);
    assert_eq!(rig.facilitator_calls().await, (2, 2));
}

#[tokio::test]
async fn a_paid_call_answered_with_a_redirect_is_settled_and_relayed_with_the_receipt() {
    let rig = McpRig::start().await;
    let session = rig.session("/mcp").await;
    let (_, answer) = rig
        .pay_and_call("/mcp-moved", &session, 1, "search", json!({"q": "r"}))
        .await;
    // A status below 400 is a success, as on an HTTP route: settled, the answer relayed as it
    // is with the receipt in the header.
    assert_eq!(answer.status, 302);
    assert_eq!(
        answer.result()["content"][0]["text"],
        "secret results for r"
    );
    let receipt = answer
        .headers
        .get("payment-response")
        .expect("the receipt header")
        .to_str()
        .unwrap();
    let receipt = decode_b64_json(receipt);
    assert_eq!(receipt["success"], true, "{receipt}");
    assert_eq!(rig.executions("search").await, 1);
    assert_eq!(rig.facilitator_calls().await, (1, 1));
    let journal = rig.journal();
    let states: Vec<&str> = journal
        .iter()
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["verified", "settled"], "{journal:?}");
    assert_eq!(journal[1]["transaction"], receipt["transaction"]);
}
