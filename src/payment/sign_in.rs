//! Sign-in-with-x (SIWx: CAIP-122 wallet sign-in, EIP-4361 messages on EVM chains): a wallet that
//! paid for a route's resource proves it holds the paying address, and is served again without a
//! new payment while the route's access window lasts.
//!
//! The gateway issues the sign-in challenge in the 402 (`extensions["sign-in-with-x"]`: domain and
//! URI from the configured public URL, a fresh nonce, issued-at and expiry) and checks the signed
//! answer (`SIGN-IN-WITH-X` header) here, as the official `@x402/extensions` server does: same
//! message, same checks in the same order, same reason codes. Only EOA signatures (EIP-191) are
//! checked: a smart wallet's (EIP-1271, EIP-6492) needs a call to the chain, which the gateway does
//! not make, and is refused with a reason saying so. Whether the nonce is fresh and whether the
//! wallet holds a grant are the store's (the proxy asks after these checks pass).

use super::eip712::{recover_signer, SignatureError};
use crate::time::{parse_rfc3339, rfc3339};
use alloy_primitives::{eip191_hash_message, Address};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The extension's key in `extensions` and the request header's name.
pub const SIGN_IN_WITH_X: &str = "sign-in-with-x";

/// How long a sign-in challenge may be used after the gateway issued it (the official default).
pub const CHALLENGE_LIFETIME_MS: i64 = 5 * 60 * 1000;

/// How far a replica's clock may run ahead of the one that issued a challenge.
const CLOCK_SKEW_MS: i64 = 30 * 1000;

/// The signed answer a client sends in `SIGN-IN-WITH-X` (base64 JSON).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignInPayload {
    pub domain: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    pub uri: String,
    pub version: String,
    pub chain_id: String,
    #[serde(rename = "type")]
    pub signature_type: String,
    pub nonce: String,
    pub issued_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_scheme: Option<String>,
    pub signature: String,
}

/// What a sign-in must match: the gateway's public origin and the networks the route accepts.
#[derive(Debug, Clone, Copy)]
pub struct SignInTerms<'a> {
    /// `scheme://host[:port]` of the configured public URL.
    pub origin: &'a str,
    /// `host[:port]` of the configured public URL (the EIP-4361 domain).
    pub host: &'a str,
    /// CAIP-2 networks of the route's payment options.
    pub networks: &'a [String],
}

/// A sign-in that passed every check the gateway makes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The signing address, EIP-55.
    pub address: String,
    pub nonce: String,
    /// Unix milliseconds until which the message could be presented: how long its nonce must
    /// be remembered as used.
    pub usable_until_ms: i64,
}

/// Why a sign-in is refused: an official reason code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SignInRefusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> SignInRefusal {
    SignInRefusal {
        code,
        message: message.into(),
    }
}

/// Reads a `SIGN-IN-WITH-X` header: base64 of the JSON payload.
pub fn decode_sign_in(header: &[u8]) -> Result<SignInPayload, SignInRefusal> {
    use base64::Engine;
    let text = std::str::from_utf8(header)
        .map_err(|_| refuse("invalid_siwx_header", "the header is not text"))?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| refuse("invalid_siwx_header", "the header is not valid base64"))?;
    serde_json::from_slice(&json).map_err(|e| {
        refuse(
            "invalid_siwx_header",
            format!("the header is not a sign-in: {e}"),
        )
    })
}

/// The EVM chain id of a CAIP-2 `eip155:<id>` network.
fn evm_chain_id(network: &str) -> Option<u64> {
    network.strip_prefix("eip155:")?.parse().ok()
}

/// The EIP-4361 message the wallet signed, exactly as the official client writes it (the address
/// in EIP-55 form, a blank line in place of an absent statement).
pub fn siwe_message(payload: &SignInPayload, address: &Address, chain_id: u64) -> String {
    let mut head = format!(
        "{} wants you to sign in with your Ethereum account:\n{}",
        payload.domain,
        address.to_checksum(None)
    );
    match &payload.statement {
        None => head.push_str("\n\n"),
        Some(statement) => {
            head.push_str("\n\n");
            head.push_str(statement);
            head.push('\n');
        }
    }
    let mut fields = vec![
        format!("URI: {}", payload.uri),
        format!("Version: {}", payload.version),
        format!("Chain ID: {chain_id}"),
        format!("Nonce: {}", payload.nonce),
        format!("Issued At: {}", payload.issued_at),
    ];
    if let Some(expiration) = &payload.expiration_time {
        fields.push(format!("Expiration Time: {expiration}"));
    }
    if let Some(not_before) = &payload.not_before {
        fields.push(format!("Not Before: {not_before}"));
    }
    if let Some(request_id) = &payload.request_id {
        fields.push(format!("Request ID: {request_id}"));
    }
    if let Some(resources) = &payload.resources {
        let mut list = String::from("Resources:");
        for resource in resources {
            list.push_str("\n- ");
            list.push_str(resource);
        }
        fields.push(list);
    }
    format!("{head}\n{}", fields.join("\n"))
}

/// The origin (`scheme://host[:port]`) of `uri`, if it is an absolute URL.
fn origin_of(uri: &str) -> Option<String> {
    let parsed = url::Url::parse(uri).ok()?;
    Some(parsed.origin().ascii_serialization())
}

/// Checks a sign-in against `terms` at `now_ms`: the message is for this gateway, fresh, and
/// signed by the address it names. The nonce's single use and the grant are the store's.
pub fn check_sign_in(
    payload: &SignInPayload,
    terms: SignInTerms<'_>,
    now_ms: i64,
) -> Result<SignedIn, SignInRefusal> {
    if payload.domain != terms.host {
        return Err(refuse(
            "invalid_siwx_domain_mismatch",
            format!("the message is for `{}`, not this gateway", payload.domain),
        ));
    }
    if origin_of(&payload.uri).as_deref() != Some(terms.origin) {
        return Err(refuse(
            "invalid_siwx_uri_mismatch",
            "the message's URI is not on this gateway",
        ));
    }
    let issued_at = parse_rfc3339(&payload.issued_at)
        .ok_or_else(|| refuse("invalid_siwx_issued_at", "issuedAt is not a UTC time"))?;
    let age = now_ms - issued_at;
    if age > CHALLENGE_LIFETIME_MS {
        return Err(refuse(
            "invalid_siwx_issued_at_too_old",
            "the sign-in challenge is too old; ask for a new one",
        ));
    }
    if age < -CLOCK_SKEW_MS {
        return Err(refuse(
            "invalid_siwx_issued_at_in_future",
            "issuedAt is in the future",
        ));
    }
    let mut usable_until_ms = issued_at + CHALLENGE_LIFETIME_MS + CLOCK_SKEW_MS;
    if let Some(expiration) = &payload.expiration_time {
        let expires = parse_rfc3339(expiration).ok_or_else(|| {
            refuse(
                "invalid_siwx_expiration_time",
                "expirationTime is not a UTC time",
            )
        })?;
        if expires < now_ms {
            return Err(refuse("invalid_siwx_expired", "the sign-in expired"));
        }
        usable_until_ms = usable_until_ms.min(expires.max(now_ms));
    }
    if let Some(not_before) = &payload.not_before {
        let starts = parse_rfc3339(not_before)
            .ok_or_else(|| refuse("invalid_siwx_not_before", "notBefore is not a UTC time"))?;
        if now_ms < starts {
            return Err(refuse(
                "invalid_siwx_not_yet_valid",
                "the sign-in is not valid yet",
            ));
        }
    }
    let chain_id = evm_chain_id(&payload.chain_id).ok_or_else(|| {
        refuse(
            "invalid_siwx_chain_id",
            format!("`{}` is not an eip155 network", payload.chain_id),
        )
    })?;
    if payload.signature_type != "eip191" || !terms.networks.contains(&payload.chain_id) {
        return Err(refuse(
            "invalid_siwx_unsupported_chain",
            format!(
                "this route accepts eip191 sign-ins on {}",
                terms.networks.join(", ")
            ),
        ));
    }
    let address: Address = payload.address.parse().map_err(|_| {
        refuse(
            "invalid_siwx_signature",
            "the address is not an EVM address",
        )
    })?;
    let message = siwe_message(payload, &address, chain_id);
    let digest = eip191_hash_message(message.as_bytes());
    match recover_signer(&payload.signature, &digest) {
        Ok(signer) if signer == address => Ok(SignedIn {
            address: address.to_checksum(None),
            nonce: payload.nonce.clone(),
            usable_until_ms,
        }),
        Ok(_) => Err(refuse(
            "invalid_siwx_signature",
            "the signature is not the address's",
        )),
        Err(SignatureError::NotEoaLength) => Err(refuse(
            "invalid_siwx_signature",
            "smart-wallet signatures (EIP-1271, EIP-6492) need an on-chain check this gateway does not make; sign in with the wallet's own key (EIP-191)",
        )),
        Err(_) => Err(refuse(
            "invalid_siwx_malformed_signature",
            "the signature cannot be read",
        )),
    }
}

/// What a sign-in challenge names: where, for what, and when.
#[derive(Debug, Clone, Copy)]
pub struct SignInChallenge<'a> {
    /// `host[:port]` of the public URL.
    pub host: &'a str,
    /// The resource's absolute URL on the public URL.
    pub resource_url: &'a str,
    pub networks: &'a [String],
    /// A fresh nonce (letters and digits, at least 8).
    pub nonce: &'a str,
    pub now_ms: i64,
    pub statement: Option<&'a str>,
}

/// The `sign-in-with-x` extension of a 402, shaped as the official server declares it.
pub fn sign_in_declaration(challenge: SignInChallenge<'_>) -> Value {
    let mut info = json!({
        "domain": challenge.host,
        "uri": challenge.resource_url,
        "version": "1",
        "nonce": challenge.nonce,
        "issuedAt": rfc3339(challenge.now_ms),
        "expirationTime": rfc3339(challenge.now_ms + CHALLENGE_LIFETIME_MS),
        "resources": [challenge.resource_url],
    });
    if let (Some(statement), Some(object)) = (challenge.statement, info.as_object_mut()) {
        object.insert("statement".into(), statement.into());
    }
    let mut networks: Vec<&String> = Vec::new();
    for network in challenge.networks {
        if !networks.contains(&network) {
            networks.push(network);
        }
    }
    let chains: Vec<Value> = networks
        .into_iter()
        .map(|network| json!({"chainId": network, "type": "eip191"}))
        .collect();
    json!({
        "info": info,
        "supportedChains": chains,
        "schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "domain": {"type": "string"},
                "address": {"type": "string"},
                "statement": {"type": "string"},
                "uri": {"type": "string", "format": "uri"},
                "version": {"type": "string"},
                "chainId": {"type": "string"},
                "type": {"type": "string"},
                "nonce": {"type": "string"},
                "issuedAt": {"type": "string", "format": "date-time"},
                "expirationTime": {"type": "string", "format": "date-time"},
                "notBefore": {"type": "string", "format": "date-time"},
                "requestId": {"type": "string"},
                "resources": {"type": "array", "items": {"type": "string", "format": "uri"}},
                "signature": {"type": "string"}
            },
            "required": ["domain", "address", "uri", "version", "chainId", "type", "nonce", "issuedAt", "signature"]
        }
    })
}

#[cfg(test)]
#[path = "sign_in_tests.rs"]
mod tests;
