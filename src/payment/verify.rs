//! Local checks of a payment before any facilitator is asked: the payment must be one of the
//! route's configured options, and its authorization must be signed by its payer, pay the
//! configured recipient exactly the configured amount, and be valid for long enough to settle.

use super::eip712::{authorization_digest, recover_signer, SignatureError, TokenDomain};
use super::permit2::check_upto_authorization;
use super::replay::ReplayKey;
use crate::pricing::{PaymentOption, PricedRoute};
use crate::x402::{ExactEvmPayload, PaymentPayload, PaymentRequirements};
use alloy_primitives::Address;

/// The authorization must stay valid this long after the check, so that settlement can still land.
pub const VALID_BEFORE_MARGIN_SECS: u64 = 6;

/// A payment that passed the local checks.
#[derive(Debug, Clone)]
pub struct VerifiedPayment {
    /// Index into the route's options.
    pub option_index: usize,
    /// The paying address (`authorization.from`, EIP-55).
    pub payer: String,
    pub amount: u128,
    /// Unix seconds after which the authorization is dead.
    pub valid_before: u64,
    pub replay_key: ReplayKey,
    /// False for smart-wallet (non-65-byte) signatures, which only the facilitator can check.
    pub signature_checked_locally: bool,
}

/// Why a payment was refused; `reason` is a stable x402-style code, `message` says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct PaymentRejection {
    pub reason: &'static str,
    pub message: String,
}

pub(super) fn reject(reason: &'static str, message: impl Into<String>) -> PaymentRejection {
    PaymentRejection {
        reason,
        message: message.into(),
    }
}

/// The key of `accepted.extra` that an `aggr_deferred` buyer adds (its session certificate). It is
/// forwarded to the facilitator inside the payment and never becomes part of the requirements.
pub const SESSION_CERT: &str = "sessionCert";

/// The scheme whose authorizations are signed by a session key rather than by `from`.
pub const AGGR_DEFERRED: &str = "aggr_deferred";

/// The first field in which the client's `accepted` differs from a configured option. A superset
/// match: every field the option declares must match, `extra` key by key; a client may add keys
/// under `extra` (such as `sessionCert`), which never become part of the requirements.
fn first_difference(
    accepted: &PaymentRequirements,
    option: &PaymentRequirements,
) -> Option<String> {
    let field = |name: &str, got: &str, want: &str, ci: bool| {
        let equal = if ci {
            got.eq_ignore_ascii_case(want)
        } else {
            got == want
        };
        (!equal).then(|| format!("accepted.{name} is `{got}` but this route requires `{want}`"))
    };
    let extra_keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().filter(|k| *k != SESSION_CERT).cloned().collect())
            .unwrap_or_default()
    };
    let keys = extra_keys(&option.extra);
    field("scheme", &accepted.scheme, &option.scheme, false)
        .or_else(|| field("network", &accepted.network, &option.network, false))
        .or_else(|| field("asset", &accepted.asset, &option.asset, true))
        .or_else(|| field("payTo", &accepted.pay_to, &option.pay_to, true))
        .or_else(|| field("amount", &accepted.amount, &option.amount, false))
        .or_else(|| {
            field(
                "maxTimeoutSeconds",
                &accepted.max_timeout_seconds.to_string(),
                &option.max_timeout_seconds.to_string(),
                false,
            )
        })
        .or_else(|| {
            keys.iter().find_map(|k| {
                let show = |v: Option<&serde_json::Value>| match v {
                    None => String::new(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                field(
                    &format!("extra.{k}"),
                    &show(accepted.extra.get(k)),
                    &show(option.extra.get(k)),
                    false,
                )
            })
        })
}

/// The route's option a payment names (v2: every key of `accepted` must be the option's).
pub fn find_option<'a>(
    route: &'a PricedRoute,
    payment: &PaymentPayload,
) -> Result<(usize, &'a PaymentOption), PaymentRejection> {
    let accepted = match payment {
        PaymentPayload::V2(p) => Some(&p.accepted),
        PaymentPayload::Upto(p) => Some(&p.accepted),
        PaymentPayload::Batch(p) => Some(&p.accepted),
        PaymentPayload::V1(_) => None,
    };
    match (payment, accepted) {
        (_, Some(accepted)) => {
            let mut closest = None;
            for (i, option) in route.options.iter().enumerate() {
                match first_difference(accepted, &option.requirements) {
                    None => return Ok((i, option)),
                    Some(diff) => {
                        let same_network = option.requirements.network == accepted.network
                            && option.requirements.scheme == accepted.scheme;
                        if closest.is_none() || same_network {
                            closest = Some(diff);
                        }
                    }
                }
            }
            Err(reject(
                "no_matching_requirements",
                closest
                    .unwrap_or_else(|| "the payment matches none of this route's options".into()),
            ))
        }
        (PaymentPayload::V1(p), None) => route
            .options
            .iter()
            .enumerate()
            .find(|(_, o)| {
                o.v1_network == Some(p.network.as_str()) && o.requirements.scheme == p.scheme
            })
            .ok_or_else(|| {
                reject(
                    "no_matching_requirements",
                    format!(
                        "this route accepts no `{}` payment on network `{}`",
                        p.scheme, p.network
                    ),
                )
            }),
        (_, None) => Err(reject(
            "no_matching_requirements",
            "the payment names no requirements",
        )),
    }
}

fn parse_u64(text: &str, field: &str) -> Result<u64, PaymentRejection> {
    text.parse().map_err(|_| {
        reject(
            "invalid_payload",
            format!("authorization.{field} `{text}` is not a unix time"),
        )
    })
}

/// `validBefore` may be `uint256` max ("no expiry", as batch buyers send it): anything past `u64`
/// is read as `u64::MAX`.
fn parse_valid_before(text: &str) -> Result<u64, PaymentRejection> {
    if !text.is_empty() && text.len() > 19 && text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(text.parse::<u64>().unwrap_or(u64::MAX));
    }
    parse_u64(text, "validBefore")
}

/// Runs every local check; `now` is unix seconds.
pub fn check_payment(
    route: &PricedRoute,
    payment: &PaymentPayload,
    now: u64,
) -> Result<VerifiedPayment, PaymentRejection> {
    let (option_index, option) = find_option(route, payment)?;
    if let PaymentPayload::Upto(upto) = payment {
        // `find_option` matched every declared key, so `option.requirements` carries the
        // facilitator address the challenge named.
        let verified =
            check_upto_authorization(&upto.payload, &option.requirements, option.chain_id, now)?;
        return Ok(VerifiedPayment {
            option_index,
            payer: verified.payer,
            amount: verified.maximum,
            valid_before: verified.deadline,
            replay_key: verified.replay_key,
            signature_checked_locally: true,
        });
    }
    let Some(exact) = payment.exact() else {
        return Err(reject(
            "no_matching_requirements",
            format!("this route does not take `{}` payments", payment.scheme()),
        ));
    };
    let separator = option.domain_separator.get_or_init(|| {
        TokenDomain::for_requirements(&option.requirements, option.chain_id)
            .ok()
            .map(|d| d.separator())
    });
    let domain = separator
        .map(TokenDomain::from_separator)
        .ok_or_else(|| malformed(&SignatureError::Field("asset")))?;
    let mut verified =
        check_authorization_in(exact, &option.requirements, &domain, option.amount, now)?;
    verified.option_index = option_index;
    Ok(verified)
}

pub(super) fn malformed(error: &SignatureError) -> PaymentRejection {
    match error {
        SignatureError::Field(field) => reject(
            "invalid_payload",
            format!("authorization.{field} is malformed"),
        ),
        other => reject("invalid_payload", other.to_string()),
    }
}

/// Checks an `exact` payload against one set of requirements: recipient, amount, validity window
/// and (for 65-byte signatures) the signer.
pub fn check_authorization(
    exact: &ExactEvmPayload,
    requirements: &PaymentRequirements,
    chain_id: u64,
    amount: u128,
    now: u64,
) -> Result<VerifiedPayment, PaymentRejection> {
    let domain =
        TokenDomain::for_requirements(requirements, chain_id).map_err(|e| malformed(&e))?;
    check_authorization_in(exact, requirements, &domain, amount, now)
}

/// [`check_authorization`] with the token's EIP-712 domain already hashed.
fn check_authorization_in(
    exact: &ExactEvmPayload,
    requirements: &PaymentRequirements,
    domain: &TokenDomain,
    amount: u128,
    now: u64,
) -> Result<VerifiedPayment, PaymentRejection> {
    let auth = &exact.authorization;
    if !auth.to.eq_ignore_ascii_case(&requirements.pay_to) {
        return Err(reject(
            "invalid_exact_evm_recipient_mismatch",
            format!(
                "authorization.to `{}` is not this route's payTo `{}`",
                auth.to, requirements.pay_to
            ),
        ));
    }
    let value: u128 = auth.value.parse().map_err(|_| {
        reject(
            "invalid_exact_evm_authorization_value",
            format!("authorization.value `{}` is not an amount", auth.value),
        )
    })?;
    if value != amount {
        return Err(reject(
            "invalid_exact_evm_authorization_value",
            format!("authorization.value is {value} but the price is {amount}"),
        ));
    }
    let valid_after = parse_u64(&auth.valid_after, "validAfter")?;
    let valid_before = parse_valid_before(&auth.valid_before)?;
    if valid_after > now {
        return Err(reject(
            "invalid_exact_evm_payload_authorization_valid_after",
            format!("the authorization is not valid before {valid_after} (now {now})"),
        ));
    }
    if now.saturating_add(VALID_BEFORE_MARGIN_SECS) >= valid_before {
        return Err(reject(
            "invalid_exact_evm_payload_authorization_valid_before",
            format!("the authorization expires at {valid_before}, too soon to settle (now {now})"),
        ));
    }

    let digest = authorization_digest(auth, domain).map_err(|e| malformed(&e))?;
    let from: Address = auth
        .from
        .parse()
        .map_err(|_| reject("invalid_payload", "authorization.from is not an address"))?;
    let payer = from.to_checksum(None);
    let session_key_signed = requirements.scheme == AGGR_DEFERRED;
    let signature_checked_locally = match recover_signer(&exact.signature, &digest) {
        Ok(signer) if signer == from => true,
        // Batch payments are signed by a session key bound to `from` by the buyer's session
        // certificate, which only the facilitator can check.
        Ok(_) if session_key_signed => false,
        Ok(signer) => {
            return Err(reject(
                "invalid_exact_evm_signature",
                format!("the signature was made by {signer}, not by authorization.from {payer}"),
            ))
        }
        // Smart-wallet signatures (ERC-1271/6492) are longer than 65 bytes: the facilitator checks them.
        Err(SignatureError::NotEoaLength) if exact.signature.len() > 132 => false,
        Err(e) => return Err(reject("invalid_exact_evm_signature", e.to_string())),
    };

    Ok(VerifiedPayment {
        option_index: 0,
        payer,
        amount: value,
        valid_before,
        replay_key: ReplayKey::new(
            &requirements.network,
            &requirements.asset,
            &auth.from,
            &auth.nonce,
        ),
        signature_checked_locally,
    })
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
