//! The EIP-712 signature checks: digest of a `transferWithAuthorization`, signer recovery and the
//! authorization checks. Input: newline-separated from, to, value, validAfter, validBefore, nonce,
//! signature.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use x402_gateway::payment::{authorization_signing_hash, check_authorization, recover_signer};
use x402_gateway::pricing::RouteKind;
use x402_gateway::x402::{Authorization, ExactEvmPayload};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n').map(str::to_string);
    let mut next = || fields.next().unwrap_or_default();
    let authorization = Authorization {
        from: next(),
        to: next(),
        value: next(),
        valid_after: next(),
        valid_before: next(),
        nonce: next(),
    };
    let signature = next();
    let asset = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
    if let Ok(digest) = authorization_signing_hash(&authorization, "USDC", "2", 84532, asset) {
        let _ = recover_signer(&signature, &digest);
    }
    let exact = ExactEvmPayload {
        signature,
        authorization,
    };
    let config = common::config();
    for route in config.routes.in_file_order() {
        if let RouteKind::Priced(priced) = &route.kind {
            for option in &priced.options {
                let _ = check_authorization(
                    &exact,
                    &option.requirements,
                    option.chain_id,
                    option.amount,
                    1_700_000_000,
                );
            }
        }
    }
});
