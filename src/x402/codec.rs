//! Header values are base64 of compact JSON. Official SDKs emit the standard alphabet with padding
//! and some clients drop the padding or use the URL-safe alphabet, so decoding accepts all of them
//! while encoding always produces the canonical form.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Upper bound on an encoded payment header: a payload is well under 4 KiB; anything far larger
/// is refused before decoding so a client cannot make the gateway parse megabytes of JSON.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderDecodeError {
    #[error("the header is empty")]
    Empty,
    #[error("the header is {0} bytes long, more than the {MAX_HEADER_LEN} allowed")]
    TooLong(usize),
    #[error("the header is not valid base64")]
    NotBase64,
    #[error("the decoded header is not UTF-8 JSON: {0}")]
    NotJson(String),
    #[error("the decoded JSON is not a payment payload: {0}")]
    WrongShape(String),
}

/// Decodes a base64 JSON header value into `T`.
pub fn decode_header_json<T: DeserializeOwned>(
    value: &[u8],
) -> Result<(T, serde_json::Value), HeaderDecodeError> {
    let trimmed = value.trim_ascii();
    if trimmed.is_empty() {
        return Err(HeaderDecodeError::Empty);
    }
    if trimmed.len() > MAX_HEADER_LEN {
        return Err(HeaderDecodeError::TooLong(trimmed.len()));
    }
    let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(trimmed).ok())
        .ok_or(HeaderDecodeError::NotBase64)?;
    let raw: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| HeaderDecodeError::NotJson(e.to_string()))?;
    let typed = T::deserialize(&raw).map_err(|e| HeaderDecodeError::WrongShape(e.to_string()))?;
    Ok((typed, raw))
}

/// Encodes `value` as standard padded base64 of compact JSON, the form every SDK can read.
pub fn encode_header_json<T: Serialize + ?Sized>(value: &T) -> String {
    // Serialising plain data structures to a Vec cannot fail.
    let json = serde_json::to_vec(value).unwrap_or_default();
    STANDARD.encode(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_unpadded_and_url_safe_forms() {
        let json = br#"{"a":"??>"}"#;
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(json);
            let (v, _): (serde_json::Value, _) = decode_header_json(encoded.as_bytes()).unwrap();
            assert_eq!(v["a"], "??>");
        }
    }

    #[test]
    fn rejects_garbage_with_a_precise_reason() {
        assert_eq!(
            decode_header_json::<serde_json::Value>(b"  ").unwrap_err(),
            HeaderDecodeError::Empty
        );
        assert_eq!(
            decode_header_json::<serde_json::Value>(b"%%%").unwrap_err(),
            HeaderDecodeError::NotBase64
        );
        let not_json = STANDARD.encode("hello");
        assert!(matches!(
            decode_header_json::<serde_json::Value>(not_json.as_bytes()).unwrap_err(),
            HeaderDecodeError::NotJson(_)
        ));
        let huge = "A".repeat(MAX_HEADER_LEN + 1);
        assert!(matches!(
            decode_header_json::<serde_json::Value>(huge.as_bytes()).unwrap_err(),
            HeaderDecodeError::TooLong(_)
        ));
    }

    #[test]
    fn encodes_standard_padded_base64() {
        let encoded = encode_header_json(&serde_json::json!({"x": 1}));
        assert_eq!(encoded, STANDARD.encode(br#"{"x":1}"#));
    }
}
