//! The admission claims of a paid request, in this process or in Redis in one round trip.

use super::idempotency::{completed_value, idempotency_key, in_flight, read_claim};
use super::rate::RateCounter;
use super::redis::{arg, RedisStore};
use super::replay::{held_error, RedisReplayGuard};
use crate::payment::claims::{Admission, AdmissionStore, AdmissionUnavailable, Claims, Delivered};
use crate::payment::idempotency::{Claim, IdempotencyStore};
use crate::payment::{ReplayError, ReplayGuard, ReplayKey};
use async_trait::async_trait;
use redis::Script;
use std::sync::{Arc, LazyLock};

/// The stores of one process asked in turn, undoing the identifier's claim when a later step
/// refuses: the same answers as [`RedisAdmission`] without a shared store.
pub struct LocalAdmission {
    replay: Arc<dyn ReplayGuard>,
    idempotency: Arc<dyn IdempotencyStore>,
    rates: Arc<dyn RateCounter>,
}

impl LocalAdmission {
    pub fn new(
        replay: Arc<dyn ReplayGuard>,
        idempotency: Arc<dyn IdempotencyStore>,
        rates: Arc<dyn RateCounter>,
    ) -> Self {
        Self {
            replay,
            idempotency,
            rates,
        }
    }
}

#[async_trait]
impl AdmissionStore for LocalAdmission {
    async fn admit(&self, claims: &Claims<'_>) -> Result<Admission, AdmissionUnavailable> {
        if let Some(identifier) = claims.identifier {
            let claim = self
                .idempotency
                .claim(&identifier.id, &identifier.fingerprint, identifier.ttl)
                .await
                .map_err(|_| AdmissionUnavailable)?;
            if claim != Claim::New {
                return Ok(Admission::Identifier(claim));
            }
        }
        let give_up_identifier = || async {
            if let Some(identifier) = claims.identifier {
                self.idempotency
                    .abandon(&identifier.id, &identifier.fingerprint)
                    .await;
            }
        };
        if !claims.rates.is_empty() {
            let keys: Vec<_> = claims
                .rates
                .iter()
                .map(|rate| (rate.key.clone(), rate.window))
                .collect();
            // A counter that does not answer lets the request through to the replay guard,
            // which fails closed.
            if let Ok(counts) = self.rates.hit_all(&keys).await {
                if let Some(index) = Admission::exceeded(claims.rates, &counts) {
                    give_up_identifier().await;
                    return Ok(Admission::RateLimited { index });
                }
            }
        }
        match self
            .replay
            .reserve(claims.replay, claims.expires_at, claims.now)
            .await
        {
            Ok(()) => Ok(Admission::Claimed),
            Err(e) => {
                give_up_identifier().await;
                match e {
                    ReplayError::Unavailable => Err(AdmissionUnavailable),
                    refused => Ok(Admission::Replay(refused)),
                }
            }
        }
    }

    async fn finish_settled(
        &self,
        replay: &ReplayKey,
        // The in-memory guard keeps the expiry it was reserved with.
        _expires_at: u64,
        delivered: Option<Delivered<'_>>,
    ) {
        self.replay.mark_settled(replay).await;
        if let Some(d) = delivered {
            self.idempotency
                .complete(d.id, d.fingerprint, d.completed, d.ttl)
                .await;
        }
    }
}

/// All claims in one script: `{kind, detail}` with kind `ok`, `idem` (the value holding the
/// identifier), `rate` (the 1-based index of the exceeded limit) or `replay` (the value holding
/// the authorization).
///
/// KEYS: the replay key, then the identifier's key when ARGV[3] is not empty, then one key per
/// limit. ARGV: replay token, replay ttl ms, identifier value, identifier ttl ms, then a window
/// (ms) and a limit per counter.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local with_id = ARGV[3] ~= ''
          local first_rate = with_id and 3 or 2
          if with_id then
            local held = redis.call('GET', KEYS[2])
            if held then return {'idem', held} end
          end
          local exceeded = nil
          for i = first_rate, #KEYS do
            local n = redis.call('INCR', KEYS[i])
            local at = 5 + (i - first_rate) * 2
            if n == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[at]) end
            if not exceeded and n > tonumber(ARGV[at + 1]) then exceeded = i - first_rate + 1 end
          end
          if exceeded then return {'rate', tostring(exceeded)} end
          if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
            return {'replay', redis.call('GET', KEYS[1]) or 'reserved:'}
          end
          if with_id then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
          return {'ok', ''}",
    )
});

/// The reservation owned by ARGV[1] (or vanished) becomes `settled` for ARGV[2] ms; the
/// identifier's in-flight value ARGV[3], when KEYS[2] is given, becomes ARGV[4] for ARGV[5] ms.
static FINISH_SETTLED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local held = redis.call('GET', KEYS[1])
          if held == ARGV[1] or not held then
            redis.call('SET', KEYS[1], 'settled', 'PX', ARGV[2])
          end
          if KEYS[2] and redis.call('GET', KEYS[2]) == ARGV[3] then
            redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
          end
          return 1",
    )
});

/// Every replica's claims in one Redis round trip.
pub struct RedisAdmission {
    store: Arc<RedisStore>,
    replay: Arc<RedisReplayGuard>,
}

impl RedisAdmission {
    pub fn new(store: Arc<RedisStore>, replay: Arc<RedisReplayGuard>) -> Self {
        Self { store, replay }
    }
}

#[async_trait]
impl AdmissionStore for RedisAdmission {
    async fn admit(&self, claims: &Claims<'_>) -> Result<Admission, AdmissionUnavailable> {
        let (token, replay_ttl_ms) = self.replay.new_reservation(claims.expires_at, claims.now);
        let mut keys = vec![self.replay.redis_key(claims.replay)];
        let mut args = vec![arg(token.as_str()), arg(replay_ttl_ms)];
        match claims.identifier {
            Some(identifier) => {
                keys.push(idempotency_key(&self.store, &identifier.id));
                args.push(arg(in_flight(&identifier.fingerprint)));
                args.push(arg(identifier.ttl.as_millis() as u64));
            }
            None => args.extend([arg(""), arg(0u64)]),
        }
        for rate in claims.rates {
            keys.push(self.store.key("rate", &rate.key));
            args.push(arg(rate.window.as_millis() as u64));
            args.push(arg(rate.limit));
        }
        let answer: Vec<String> = self
            .store
            // Named for what fails closed, as when the reservation was a call of its own.
            .eval("replay_reserve", &ADMIT, keys, args)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "admission claims failed");
                AdmissionUnavailable
            })?;
        let (kind, detail) = match answer.as_slice() {
            [kind, detail] => (kind.as_str(), detail.as_str()),
            // Not ours to interpret: refuse rather than let the payment through.
            _ => return Err(AdmissionUnavailable),
        };
        Ok(match kind {
            "ok" => {
                self.replay.hold(claims.replay, token, claims.expires_at);
                Admission::Claimed
            }
            "idem" => {
                let fingerprint = claims.identifier.map_or("", |i| i.fingerprint.as_str());
                Admission::Identifier(read_claim(detail, fingerprint))
            }
            "rate" => match detail.parse::<usize>() {
                Ok(index) if index >= 1 => Admission::RateLimited { index: index - 1 },
                _ => return Err(AdmissionUnavailable),
            },
            "replay" => Admission::Replay(held_error(detail)),
            _ => return Err(AdmissionUnavailable),
        })
    }

    async fn finish_settled(
        &self,
        replay: &ReplayKey,
        expires_at: u64,
        delivered: Option<Delivered<'_>>,
    ) {
        let (token, ttl_ms) = self.replay.take_held(replay, expires_at);
        let mut keys = vec![self.replay.redis_key(replay)];
        let mut args = vec![arg(token.as_str()), arg(ttl_ms)];
        if let Some(d) = delivered {
            if let Some(done) = completed_value(d.fingerprint, d.completed) {
                keys.push(idempotency_key(&self.store, d.id));
                args.extend([
                    arg(in_flight(d.fingerprint)),
                    arg(done),
                    arg(d.ttl.as_millis() as u64),
                ]);
            }
        }
        let result: Result<i64, _> = self
            .store
            .eval("replay_finish", &FINISH_SETTLED, keys, args)
            .await;
        if let Err(e) = result {
            // The reservation and the in-flight claim stay until they expire: refused, not free.
            tracing::warn!(error = %e, key = %replay.to_hex(), "could not record a settled payment in redis");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::claims::{IdentifierClaim, RateClaim};
    use crate::payment::idempotency::InMemoryIdempotency;
    use crate::payment::InMemoryReplayGuard;
    use crate::store::LocalRateCounter;
    use std::time::Duration;

    fn local() -> LocalAdmission {
        LocalAdmission::new(
            Arc::new(InMemoryReplayGuard::new()),
            Arc::new(InMemoryIdempotency::new()),
            Arc::new(LocalRateCounter::new()),
        )
    }

    #[tokio::test]
    async fn claims_are_all_or_nothing_in_order() {
        let admission = local();
        let rates = [RateClaim {
            key: "payer".into(),
            window: Duration::from_secs(60),
            limit: 2,
        }];
        let identifier = |id: &str| IdentifierClaim {
            id: id.into(),
            fingerprint: "f".into(),
            ttl: Duration::from_secs(60),
        };
        let key = |n: &str| ReplayKey::new("eip155:1", "0xa", "0xf", n);
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let first = identifier("id-first");
        let claims = |replay, identifier| Claims {
            rates: &rates,
            identifier,
            replay,
            expires_at: 100,
            now: 10,
        };

        let admitted = admission.admit(&claims(&a, Some(&first))).await;
        assert_eq!(admitted, Ok(Admission::Claimed));
        // A held identifier answers first and is not counted.
        assert_eq!(
            admission.admit(&claims(&b, Some(&first))).await,
            Ok(Admission::Identifier(Claim::InFlight))
        );
        // A held authorization claims no identifier.
        let second = identifier("id-second");
        assert_eq!(
            admission.admit(&claims(&a, Some(&second))).await,
            Ok(Admission::Replay(ReplayError::InFlight))
        );
        // The third counted request exceeds the limit and claims nothing.
        let third = identifier("id-third");
        assert_eq!(
            admission.admit(&claims(&c, Some(&third))).await,
            Ok(Admission::RateLimited { index: 0 })
        );
        let unlimited = Claims {
            rates: &[],
            ..claims(&c, Some(&third))
        };
        assert_eq!(admission.admit(&unlimited).await, Ok(Admission::Claimed));
        let unlimited = Claims {
            rates: &[],
            ..claims(&b, Some(&second))
        };
        assert_eq!(
            admission.admit(&unlimited).await,
            Ok(Admission::Claimed),
            "the refused claims left the identifier and authorization free"
        );
    }
}
