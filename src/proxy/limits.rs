//! Rate limits on challenges and paid requests: counted before the facilitator is asked
//! anything, answered 429 with `Retry-After`. A paid request's counters are claimed together
//! with its other admission claims (see [`crate::payment::claims`]).

use super::{Gateway, Reply, RequestCtx};
use crate::config::RatePer;
use crate::payment::claims::{Admission, RateClaim};
use crate::payment::Refusal;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// The counters one request is counted in, and what to answer when one is exceeded.
pub(super) struct RateClaims {
    pub claims: Vec<RateClaim>,
    /// Per claim: the limit's position in `[[rate_limits]]` and when its window ends (ms).
    windows: Vec<(usize, u64)>,
    now_ms: u64,
}

impl RateClaims {
    /// Every limit covering the request's route. `payer` is known for paid requests only.
    pub fn for_request(ctx: &RequestCtx, client_ip: Option<IpAddr>, payer: Option<&str>) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut counted = Self {
            claims: Vec::new(),
            windows: Vec::new(),
            now_ms,
        };
        let Some(route_index) = ctx.route_index else {
            return counted;
        };
        let paid = payer.is_some();
        for (position, limit) in ctx.state.config.rate_limits.iter().enumerate() {
            let applies = if paid { limit.paid } else { limit.challenges };
            if !applies || !limit.covers(route_index) {
                continue;
            }
            let who = match limit.per {
                RatePer::ClientIp => client_ip.map(|ip| ip.to_string()),
                RatePer::Payer => payer.map(str::to_ascii_lowercase),
            };
            let Some(who) = who else { continue };
            // Windows are aligned on the clock so that every replica counts the same one.
            let window_ms = (limit.window.as_millis() as u64).max(1);
            let window_number = now_ms / window_ms;
            counted.claims.push(RateClaim {
                key: format!("{position}:{who}:{window_number}"),
                window: limit.window,
                limit: limit.requests,
            });
            counted
                .windows
                .push((position, (window_number + 1) * window_ms));
        }
        counted
    }

    /// The 429 for the claim at `index`, exceeded.
    pub fn reply(&self, ctx: &RequestCtx, index: usize) -> Reply {
        let Some((limit, ends_ms)) = self.windows.get(index).and_then(|(position, ends)| {
            Some((ctx.state.config.rate_limits.get(*position)?, *ends))
        }) else {
            return Reply::error(429, "rate_limited", "too many requests");
        };
        let retry_after = ends_ms.saturating_sub(self.now_ms).div_ceil(1000).max(1);
        let whom = match limit.per {
            RatePer::ClientIp => "this client address",
            RatePer::Payer => "this payer",
        };
        let message = format!(
            "more than {} requests in {:?} from {whom}; retry in {retry_after}s",
            limit.requests, limit.window
        );
        Reply::from(Refusal::new(429, "rate_limited", &message).with_retry_after(retry_after))
    }
}

impl Gateway {
    /// Counts a challenge in every limit covering its route; the 429 of the first exceeded. A
    /// counter store that does not answer lets the challenge through.
    pub(super) async fn rate_limited(
        &self,
        ctx: &RequestCtx,
        client_ip: Option<IpAddr>,
        payer: Option<&str>,
    ) -> Option<Reply> {
        let counted = RateClaims::for_request(ctx, client_ip, payer);
        if counted.claims.is_empty() {
            return None;
        }
        let keys: Vec<_> = counted
            .claims
            .iter()
            .map(|c| (c.key.clone(), c.window))
            .collect();
        let counts = match self.rates.hit_all(&keys).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::debug!(error = %e, "rate limits not counted");
                return None;
            }
        };
        let index = Admission::exceeded(&counted.claims, &counts)?;
        Some(counted.reply(ctx, index))
    }
}
