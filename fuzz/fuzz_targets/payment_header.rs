//! The payment-header decoder (v1 and v2, every base64 alphabet, JSON) and the local payment
//! checks a decoded payment goes through.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use x402_gateway::payment::check_payment;
use x402_gateway::pricing::RouteKind;
use x402_gateway::x402::{decode_header_json, PaymentPayload};

fuzz_target!(|data: &[u8]| {
    let Ok((_, raw)) = decode_header_json::<serde_json::Value>(data) else {
        return;
    };
    let Ok(payment) = PaymentPayload::from_json(&raw) else {
        return;
    };
    let config = common::config();
    for route in config.routes.in_file_order() {
        if let RouteKind::Priced(priced) = &route.kind {
            let _ = check_payment(priced, &payment, 1_700_000_000);
        }
    }
});
