//! Several facilitators chosen by network, with an optional fallback for outages.
//!
//! A payment is verified by the facilitator serving its network; when that one is down
//! (unreachable, too slow, or answering 5xx), its `fallback` is asked instead if it serves the same
//! network. Whichever answered the verification settles the payment: settlement is never sent to
//! two facilitators for one payment.
//!
//! A route settling up front makes no `/verify` call, so its `/settle` is what meets an outage:
//! it goes to the fallback only when the request certainly never reached the primary
//! ([`may_settle_elsewhere`]). A settle that timed out or failed at the primary may have moved
//! money there, and a second settle elsewhere could charge the buyer twice.

use super::{from_config, Facilitator, FacilitatorError, FacilitatorRequest, Settlement};
use crate::config::{primary_facilitator, FacilitatorConfig};
use crate::x402::VerifyResponse;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
struct Entry {
    config: FacilitatorConfig,
    client: Arc<dyn Facilitator>,
}

/// The facilitators of one configuration version.
#[derive(Clone)]
pub struct Facilitators {
    entries: Vec<Entry>,
    /// Index of the facilitator serving each listed network, resolved once.
    by_network: HashMap<String, usize>,
    /// The facilitator serving networks nobody lists (a `[facilitator]` without `networks`).
    catch_all: Option<usize>,
}

/// The answer to a verification and the facilitator that gave it (and must settle).
pub struct Verdict {
    pub facilitator: Arc<dyn Facilitator>,
    pub result: Result<VerifyResponse, FacilitatorError>,
}

/// The answer to a settlement and the facilitator that gave it (the one that may have moved the
/// money, and the one reconciliation must ask about it).
pub struct SettleAttempt {
    pub facilitator: Arc<dyn Facilitator>,
    pub result: Result<Settlement, FacilitatorError>,
}

/// Whether a failed `/settle` may be sent to another facilitator: only when the primary is down
/// and the request never reached it, so that nothing can have settled there. A timeout or a 5xx
/// is an outage too, but the primary may have broadcast the transfer before failing.
fn may_settle_elsewhere(error: &FacilitatorError) -> bool {
    error.is_outage() && error.never_sent()
}

impl Facilitators {
    pub fn from_config(configs: &[FacilitatorConfig]) -> Result<Self, FacilitatorError> {
        let entries = configs
            .iter()
            .map(|config| {
                Ok(Entry {
                    config: config.clone(),
                    client: from_config(config)?,
                })
            })
            .collect::<Result<_, FacilitatorError>>()?;
        Ok(Self::from_entries(configs, entries))
    }

    fn from_entries(configs: &[FacilitatorConfig], entries: Vec<Entry>) -> Self {
        let by_network = configs
            .iter()
            .flat_map(|c| &c.networks)
            .filter_map(|n| Some((n.clone(), primary_facilitator(configs, n)?)))
            .collect();
        Self {
            entries,
            by_network,
            catch_all: primary_facilitator(configs, ""),
        }
    }

    /// Every facilitator with its configuration, in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&FacilitatorConfig, &Arc<dyn Facilitator>)> {
        self.entries.iter().map(|e| (&e.config, &e.client))
    }

    /// The facilitator configured under `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<dyn Facilitator>> {
        self.entries
            .iter()
            .find(|e| e.config.name == name)
            .map(|e| e.client.clone())
    }

    /// Whether these clients were built from exactly `configs` (a reload may keep them).
    pub fn built_from(&self, configs: &[FacilitatorConfig]) -> bool {
        self.entries.len() == configs.len()
            && self
                .entries
                .iter()
                .zip(configs)
                .all(|(e, c)| &e.config == c)
    }

    /// The facilitator serving the CAIP-2 `network`.
    pub fn for_network(&self, network: &str) -> Option<Arc<dyn Facilitator>> {
        self.primary(network).map(|e| e.client.clone())
    }

    fn primary(&self, network: &str) -> Option<&Entry> {
        let index = self.by_network.get(network).copied().or(self.catch_all)?;
        self.entries.get(index)
    }

    fn fallback_of(&self, entry: &Entry, network: &str) -> Option<&Entry> {
        let name = entry.config.fallback.as_deref()?;
        self.entries
            .iter()
            .find(|e| e.config.name == name && e.config.serves(network))
    }

    /// Verifies with the facilitator of `network`, or its fallback when it is down. `None` when
    /// no facilitator serves `network`.
    pub async fn verify(&self, network: &str, request: &FacilitatorRequest) -> Option<Verdict> {
        let (facilitator, result) = self
            .with_fallback(
                network,
                FacilitatorError::is_outage,
                "verifying",
                |f| async move { f.verify(request).await },
            )
            .await?;
        Some(Verdict {
            facilitator,
            result,
        })
    }

    /// Settles with the facilitator of `network`, or with its fallback when the primary is down
    /// and the request never reached it. For payments no facilitator verified (settling up
    /// front); a verified payment settles with its verifier only. `None` when no facilitator
    /// serves `network`.
    pub async fn settle_with_fallback(
        &self,
        network: &str,
        request: &FacilitatorRequest,
    ) -> Option<SettleAttempt> {
        let (facilitator, result) = self
            .with_fallback(network, may_settle_elsewhere, "settling", |f| async move {
                f.settle(request).await
            })
            .await?;
        Some(SettleAttempt {
            facilitator,
            result,
        })
    }

    /// Calls the facilitator of `network`, then its fallback when the primary's error is one
    /// `may_retry` allows; returns the facilitator that gave the answer with the answer.
    async fn with_fallback<T, F, Fut>(
        &self,
        network: &str,
        may_retry: fn(&FacilitatorError) -> bool,
        doing: &str,
        call: F,
    ) -> Option<(Arc<dyn Facilitator>, Result<T, FacilitatorError>)>
    where
        F: Fn(Arc<dyn Facilitator>) -> Fut,
        Fut: std::future::Future<Output = Result<T, FacilitatorError>>,
    {
        let primary = self.primary(network)?;
        let result = call(primary.client.clone()).await;
        if let Err(e) = &result {
            if let (true, Some(fallback)) = (may_retry(e), self.fallback_of(primary, network)) {
                tracing::warn!(
                    facilitator = %primary.config.name,
                    fallback = %fallback.config.name,
                    error = %e,
                    "facilitator is down; {doing} with its fallback"
                );
                return Some((fallback.client.clone(), call(fallback.client.clone()).await));
            }
        }
        Some((primary.client.clone(), result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FacilitatorKind;
    use crate::payment::Finality;
    use crate::x402::{SettleResponse, SupportedResponse};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    const NETWORK: &str = "eip155:84532";

    /// A facilitator whose `/settle` fails with `error`, or settles when there is none.
    struct Scripted {
        name: &'static str,
        error: Option<FacilitatorError>,
        settles: AtomicUsize,
    }

    #[async_trait]
    impl Facilitator for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        async fn verify(&self, _: &FacilitatorRequest) -> Result<VerifyResponse, FacilitatorError> {
            Err(FacilitatorError::Unreachable("not used".into()))
        }
        async fn settle(&self, _: &FacilitatorRequest) -> Result<Settlement, FacilitatorError> {
            self.settles.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = &self.error {
                return Err(e.clone());
            }
            let response = SettleResponse {
                extra: None,
                success: true,
                error_reason: None,
                error_message: None,
                payer: None,
                transaction: format!("0x{}", self.name),
                network: NETWORK.into(),
                status: None,
                amount: None,
            };
            Ok(Settlement {
                raw: serde_json::to_value(&response).unwrap_or_default(),
                response,
                status: Finality::Confirmed,
            })
        }
        async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
            Err(FacilitatorError::Unreachable("not used".into()))
        }
    }

    fn config(name: &str, fallback: Option<&str>) -> FacilitatorConfig {
        FacilitatorConfig {
            name: name.into(),
            kind: FacilitatorKind::X402,
            url: Some(format!("http://{name}.invalid")),
            bearer_token: None,
            timeout: Duration::from_secs(1),
            networks: vec![NETWORK.into()],
            fallback: fallback.map(str::to_string),
            okx: None,
            agentwallex: None,
        }
    }

    /// A primary failing with `error` (or settling) and its fallback, which settles.
    fn pair(error: Option<FacilitatorError>) -> (Facilitators, Arc<Scripted>, Arc<Scripted>) {
        let primary = Arc::new(Scripted {
            name: "primary",
            error,
            settles: AtomicUsize::new(0),
        });
        let backup = Arc::new(Scripted {
            name: "backup",
            error: None,
            settles: AtomicUsize::new(0),
        });
        let configs = [config("primary", Some("backup")), config("backup", None)];
        let entries = vec![
            Entry {
                config: configs[0].clone(),
                client: primary.clone(),
            },
            Entry {
                config: configs[1].clone(),
                client: backup.clone(),
            },
        ];
        (
            Facilitators::from_entries(&configs, entries),
            primary,
            backup,
        )
    }

    fn request() -> FacilitatorRequest {
        FacilitatorRequest {
            x402_version: 2,
            payment_payload: serde_json::json!({}),
            payment_requirements: serde_json::json!({"network": NETWORK}),
            sync_settle: true,
            resource: None,
        }
    }

    #[tokio::test]
    async fn an_unreachable_primary_settles_with_its_fallback() {
        let (facilitators, primary, backup) =
            pair(Some(FacilitatorError::Unreachable("refused".into())));
        let verdict = facilitators
            .settle_with_fallback(NETWORK, &request())
            .await
            .expect("a facilitator serves the network");
        assert_eq!(verdict.facilitator.name(), "backup");
        assert_eq!(
            verdict.result.map(|s| s.response.transaction).ok(),
            Some("0xbackup".to_string())
        );
        assert_eq!(primary.settles.load(Ordering::SeqCst), 1);
        assert_eq!(backup.settles.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_settle_that_may_have_moved_money_is_never_sent_to_the_fallback() {
        let may_have_settled = [
            FacilitatorError::Timeout(Duration::from_secs(1)),
            FacilitatorError::Status {
                status: 502,
                body: "bad gateway".into(),
            },
            FacilitatorError::Garbage("cut off".into()),
            FacilitatorError::Unconfirmed {
                transaction: "0xabc".into(),
                status: "pending".into(),
                deadline: Duration::from_secs(1),
            },
        ];
        // Refused before processing, but not down: the primary's answer stands.
        let not_down = [
            FacilitatorError::Credentials("revoked".into()),
            FacilitatorError::RateLimited("busy".into()),
        ];
        for error in may_have_settled.into_iter().chain(not_down) {
            let (facilitators, primary, backup) = pair(Some(error.clone()));
            let verdict = facilitators
                .settle_with_fallback(NETWORK, &request())
                .await
                .expect("a facilitator serves the network");
            assert_eq!(verdict.facilitator.name(), "primary", "{error}");
            assert!(verdict.result.is_err(), "{error}");
            assert_eq!(primary.settles.load(Ordering::SeqCst), 1, "{error}");
            assert_eq!(backup.settles.load(Ordering::SeqCst), 0, "{error}");
        }
    }

    #[tokio::test]
    async fn a_primary_that_answers_settles_alone() {
        let (facilitators, primary, backup) = pair(None);
        let verdict = facilitators
            .settle_with_fallback(NETWORK, &request())
            .await
            .expect("a facilitator serves the network");
        assert_eq!(verdict.facilitator.name(), "primary");
        assert!(verdict.result.is_ok());
        assert_eq!(primary.settles.load(Ordering::SeqCst), 1);
        assert_eq!(backup.settles.load(Ordering::SeqCst), 0);
        assert!(facilitators
            .settle_with_fallback("eip155:1", &request())
            .await
            .is_none());
    }
}
