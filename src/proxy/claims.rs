//! The admission claims of a locally checked payment, made in one exchange with the store.

use super::idempotent::{held_identifier_reply, IdempotentRequest};
use super::limits::RateClaims;
use super::{Gateway, Reply, RequestCtx};
use crate::payment::claims::{Admission, Claims, IdentifierClaim};
use crate::payment::{Outcome, ReplayError, VerifiedPayment};
use std::net::IpAddr;

/// Why a payment's claims were not all granted.
pub(super) enum Refused {
    /// Answered as is (a rate limit, a held identifier), with the request's outcome.
    Reply(Outcome, Reply),
    /// The authorization is held, used, or the store cannot tell.
    Replay(ReplayError),
}

impl Gateway {
    /// Counts the payment in its rate limits, claims its identifier and reserves its
    /// authorization, all or nothing. On success: the claimed identifier, which the request
    /// finishes.
    pub(super) async fn claim_admission(
        &self,
        ctx: &RequestCtx,
        client_ip: Option<IpAddr>,
        identifier: Option<IdentifierClaim>,
        verified: &VerifiedPayment,
        now: u64,
    ) -> Result<Option<IdempotentRequest>, Refused> {
        let rates = RateClaims::for_request(ctx, client_ip, Some(&verified.payer));
        let claims = Claims {
            rates: &rates.claims,
            identifier: identifier.as_ref(),
            replay: &verified.replay_key,
            expires_at: verified.valid_before,
            now,
        };
        let admission = self
            .admission
            .admit(&claims)
            .await
            .map_err(|_| Refused::Replay(ReplayError::Unavailable))?;
        match admission {
            Admission::Claimed => Ok(identifier.map(IdempotentRequest::new)),
            Admission::Identifier(claim) => Err(match held_identifier_reply(claim) {
                Some((outcome, reply)) => Refused::Reply(outcome, reply),
                // A fresh claim is never reported as held; refuse rather than guess.
                None => Refused::Replay(ReplayError::Unavailable),
            }),
            Admission::RateLimited { index } => {
                Err(Refused::Reply(Outcome::Refused, rates.reply(ctx, index)))
            }
            Admission::Replay(e) => Err(Refused::Replay(e)),
        }
    }
}
