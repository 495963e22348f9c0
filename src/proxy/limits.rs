//! Rate limits on challenges and paid requests: counted before the facilitator is asked
//! anything, answered 429 with `Retry-After`.

use super::{Gateway, Reply, RequestCtx};
use crate::config::RatePer;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

impl Gateway {
    /// Counts this request in every limit covering its route; the 429 of the first exceeded.
    /// `payer` is known for paid requests only. A counter store that does not answer lets the
    /// request through: paid requests then stop at the replay store, which fails closed.
    pub(super) async fn rate_limited(
        &self,
        ctx: &RequestCtx,
        client_ip: Option<IpAddr>,
        payer: Option<&str>,
    ) -> Option<Reply> {
        let route_index = ctx.route_index?;
        let paid = payer.is_some();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let limits = &ctx.state.config.rate_limits;
        let mut counted = Vec::new();
        let mut keys = Vec::new();
        for (position, limit) in limits.iter().enumerate() {
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
            keys.push((format!("{position}:{who}:{window_number}"), limit.window));
            counted.push((limit, (window_number + 1) * window_ms));
        }
        if keys.is_empty() {
            return None;
        }
        let counts = match self.rates.hit_all(&keys).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::debug!(error = %e, "rate limits not counted");
                return None;
            }
        };
        let (limit, ends_ms) = counted
            .into_iter()
            .zip(counts)
            .find(|((limit, _), count)| *count > limit.requests)
            .map(|(counted, _)| counted)?;
        let retry_after = ends_ms.saturating_sub(now_ms).div_ceil(1000).max(1);
        let whom = match limit.per {
            RatePer::ClientIp => "this client address",
            RatePer::Payer => "this payer",
        };
        let message = format!(
            "more than {} requests in {:?} from {whom}; retry in {retry_after}s",
            limit.requests, limit.window
        );
        let mut reply = Reply::error(429, "rate_limited", &message);
        reply.headers.push(("Retry-After", retry_after.to_string()));
        Some(reply)
    }
}
