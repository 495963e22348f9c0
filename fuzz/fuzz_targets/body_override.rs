//! The `_method` reader of POST bodies. Input: a `Content-Type` line, then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x402_gateway::pricing::{body_encoding, body_method_override, BodyEncoding};

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (content_type, body) = data.split_at(split);
    let body = body.get(1..).unwrap_or_default();
    let content_type = (!content_type.is_empty()).then_some(content_type);
    let Some(encoding) = body_encoding(content_type) else {
        return;
    };
    if let BodyEncoding::Multipart { boundary } = &encoding {
        assert!(!boundary.is_empty(), "a multipart encoding has a boundary");
    }
    if let Ok(Some(method)) = body_method_override(&encoding, body) {
        // An override is a method token the frameworks would act on: upper-case, never empty.
        assert!(!method.is_empty());
        assert!(
            method.bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_'),
            "{method:?}"
        );
    }
});
