//! Several facilitators chosen by network, with an optional fallback for outages.
//!
//! A payment is verified by the facilitator serving its network; when that one is down
//! (unreachable, too slow, or answering 5xx), its `fallback` is asked instead if it serves the same
//! network. Whichever answered the verification settles the payment: settlement is never sent to
//! two facilitators for one payment.

use super::{from_config, Facilitator, FacilitatorError, FacilitatorRequest};
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
        let by_network = configs
            .iter()
            .flat_map(|c| &c.networks)
            .filter_map(|n| Some((n.clone(), primary_facilitator(configs, n)?)))
            .collect();
        Ok(Self {
            entries,
            by_network,
            catch_all: primary_facilitator(configs, ""),
        })
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
        let primary = self.primary(network)?;
        let result = primary.client.verify(request).await;
        if let Err(e) = &result {
            if let (true, Some(fallback)) = (e.is_outage(), self.fallback_of(primary, network)) {
                tracing::warn!(
                    facilitator = %primary.config.name,
                    fallback = %fallback.config.name,
                    error = %e,
                    "facilitator is down; verifying with its fallback"
                );
                return Some(Verdict {
                    facilitator: fallback.client.clone(),
                    result: fallback.client.verify(request).await,
                });
            }
        }
        Some(Verdict {
            facilitator: primary.client.clone(),
            result,
        })
    }
}
