//! Start-up checks against the vendor facilitators: every route's (scheme, network) must be
//! offered by the facilitator serving it, and the credentials must be accepted. An unreachable
//! facilitator is only a warning: the gateway starts and answers 502 until it is back.

use super::{AgentWallexFacilitator, Facilitator, FacilitatorError, Facilitators};
use crate::config::{FacilitatorConfig, FacilitatorKind, GatewayConfig};
use crate::pricing::FeeTier;
use crate::x402::SupportedResponse;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "route `{route}` takes `{scheme}` payments on `{network}`, which facilitator `{facilitator}` does not offer (it offers: {offered})"
    )]
    Unsupported {
        route: String,
        scheme: String,
        network: String,
        facilitator: String,
        offered: String,
    },
    #[error("facilitator `{facilitator}` refused the gateway's credentials ({cause})")]
    Credentials { facilitator: String, cause: String },
}

/// What the checks found that does not stop start-up.
#[derive(Debug, Default)]
pub struct Preflight {
    pub warnings: Vec<String>,
}

/// Asks each OKX and AgentWallex facilitator what it supports and compares with the routes.
pub async fn preflight(
    config: &GatewayConfig,
    facilitators: &Facilitators,
) -> Result<Preflight, PreflightError> {
    let mut report = Preflight::default();
    for (fconfig, client) in facilitators.iter() {
        if !matches!(
            fconfig.kind,
            FacilitatorKind::Okx | FacilitatorKind::AgentWallex
        ) {
            continue;
        }
        let supported = match client.supported().await {
            Ok(s) => s,
            Err(FacilitatorError::Credentials(cause)) => {
                return Err(PreflightError::Credentials {
                    facilitator: fconfig.name.clone(),
                    cause,
                })
            }
            Err(e) => {
                report.warnings.push(format!(
                    "facilitator `{}` could not be asked what it supports ({e}); paid requests it serves fail with 502 until it answers",
                    fconfig.name
                ));
                continue;
            }
        };
        for route in config.routes.in_file_order() {
            for option in route.kind.priced_routes().flat_map(|p| &p.options) {
                let r = &option.requirements;
                let served_here = facilitators
                    .for_network(&r.network)
                    .is_some_and(|f| std::ptr::addr_eq(f.as_ref(), client.as_ref()));
                if !served_here {
                    continue;
                }
                let offered = supported
                    .kinds
                    .iter()
                    .any(|k| k.scheme == r.scheme && k.network == r.network);
                if !offered {
                    let mut list: Vec<String> = supported
                        .kinds
                        .iter()
                        .map(|k| format!("{} on {}", k.scheme, k.network))
                        .collect();
                    list.dedup();
                    return Err(PreflightError::Unsupported {
                        route: route.source.clone(),
                        scheme: r.scheme.clone(),
                        network: r.network.clone(),
                        facilitator: fconfig.name.clone(),
                        offered: if list.is_empty() {
                            "nothing".into()
                        } else {
                            list.join(", ")
                        },
                    });
                }
            }
        }
    }
    Ok(report)
}

/// The fee schedule of an AgentWallex facilitator; `None` for kinds that publish none.
pub async fn fee_tiers_for(
    config: &FacilitatorConfig,
) -> Option<Result<Vec<FeeTier>, FacilitatorError>> {
    if config.kind != FacilitatorKind::AgentWallex {
        return None;
    }
    Some(match AgentWallexFacilitator::new(config) {
        Ok(client) => client.fee_tiers().await,
        Err(e) => Err(e),
    })
}

/// What start-up learned about `upto` settlers and `batch-settlement` receiver authorizers.
#[derive(Debug, Default)]
pub struct UptoSettlers {
    /// Networks whose facilitator named no `upto` address: their metered routes refuse payments
    /// (503) rather than send a challenge no facilitator can settle.
    pub missing: Vec<String>,
    /// Networks whose facilitator named no `batch-settlement` receiver authorizer: their
    /// channel routes refuse payments (503) the same way.
    pub missing_authorizers: Vec<String>,
}

/// The key of a `batch-settlement` receiver authorizer among the addresses a reload keeps.
fn authorizer_key(network: &str) -> String {
    format!("{}|{network}", crate::payment::batch::BATCH_SETTLEMENT)
}

/// What a facilitator must name before an option of `scheme` can be offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needed {
    UptoSettler,
    ReceiverAuthorizer,
}

fn needed(scheme: &str) -> Option<Needed> {
    if scheme == crate::x402::UPTO {
        Some(Needed::UptoSettler)
    } else if scheme == crate::payment::batch::BATCH_SETTLEMENT {
        Some(Needed::ReceiverAuthorizer)
    } else {
        None
    }
}

/// Completes every `upto` option with the address its facilitator settles from
/// (`extra.facilitatorAddress`), and every `batch-settlement` option with the facilitator's
/// receiver authorizer (`extra.receiverAuthorizer`: it signs the gateway's claims and refunds).
/// The official facilitator names a random one of its signers on each `/supported` call, and
/// buyers sign the address into their authorization or channel, so it is read once per
/// facilitator and kept for the life of this configuration. `known` holds addresses already read
/// (a reload keeps them, so that challenges already sent stay payable).
pub async fn resolve_upto_settlers(
    config: &mut GatewayConfig,
    facilitators: &Facilitators,
    known: &std::collections::HashMap<String, String>,
) -> UptoSettlers {
    let mut wanted: Vec<(Needed, String)> = Vec::new();
    config.routes.complete_options(|option| {
        let named = option
            .requirements
            .extra
            .get(crate::payment::batch::RECEIVER_AUTHORIZER_KEY)
            .is_some();
        if let Some(need) = needed(&option.requirements.scheme).filter(|n| {
            // A channel route that names the gateway's own authorizer asks no facilitator.
            !(named && *n == Needed::ReceiverAuthorizer)
        }) {
            let item = (need, option.requirements.network.clone());
            if !wanted.contains(&item) {
                wanted.push(item);
            }
        }
    });
    let mut addresses: std::collections::HashMap<String, String> = Default::default();
    let mut report = UptoSettlers::default();
    // One `/supported` call per facilitator, whatever number of networks it serves.
    let mut answers: Vec<(Arc<dyn Facilitator>, Option<SupportedResponse>)> = Vec::new();
    for (need, network) in wanted {
        let key = match need {
            Needed::UptoSettler => network.clone(),
            Needed::ReceiverAuthorizer => authorizer_key(&network),
        };
        let missing = |report: &mut UptoSettlers| match need {
            Needed::UptoSettler => report.missing.push(network.clone()),
            Needed::ReceiverAuthorizer => report.missing_authorizers.push(network.clone()),
        };
        if let Some(address) = known.get(&key) {
            addresses.insert(key, address.clone());
            continue;
        }
        let Some(client) = facilitators.for_network(&network) else {
            missing(&mut report);
            continue;
        };
        let position = answers
            .iter()
            .position(|(c, _)| std::ptr::addr_eq(c.as_ref(), client.as_ref()));
        let position = match position {
            Some(position) => position,
            None => {
                let supported = match client.supported().await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(facilitator = client.name(), error = %e, "the facilitator could not be asked which addresses settle `upto` payments and authorize `batch-settlement` claims");
                        None
                    }
                };
                answers.push((client.clone(), supported));
                answers.len() - 1
            }
        };
        let address = answers[position].1.as_ref().and_then(|s| match need {
            Needed::UptoSettler => s.upto_facilitator_address(&network),
            Needed::ReceiverAuthorizer => s.batch_receiver_authorizer(&network),
        });
        match address {
            Some(address) => {
                addresses.insert(key, address.to_string());
            }
            None => missing(&mut report),
        }
    }
    config.routes.complete_options(|option| {
        let r = &mut option.requirements;
        match needed(&r.scheme) {
            Some(Needed::UptoSettler) => {
                let Some(address) = addresses.get(&r.network) else {
                    return;
                };
                match crate::payment::upto_challenge_extra(&r.extra, Some(address)) {
                    Ok(extra) => r.extra = extra,
                    Err(e) => tracing::error!(network = %r.network, %address, error = %e, "the facilitator named an unusable `upto` address"),
                }
            }
            Some(Needed::ReceiverAuthorizer) => {
                let Some(address) = addresses.get(&authorizer_key(&r.network)) else {
                    return;
                };
                match crate::pricing::checksum_address(address) {
                    Some(address) => {
                        if let Some(map) = r.extra.as_object_mut() {
                            map.insert(
                                crate::payment::batch::RECEIVER_AUTHORIZER_KEY.into(),
                                serde_json::Value::String(address),
                            );
                        }
                    }
                    None => tracing::error!(network = %r.network, %address, "the facilitator named an unusable `batch-settlement` receiver authorizer"),
                }
            }
            None => {}
        }
    });
    report
}

/// The `upto` settler addresses a configuration's options carry, by network (what a reload keeps).
pub fn known_upto_settlers(config: &GatewayConfig) -> std::collections::HashMap<String, String> {
    let mut known = std::collections::HashMap::new();
    for route in config.routes.in_file_order() {
        for priced in route.kind.priced_routes() {
            let rules = priced.price_rules.iter().map(|r| &r.priced);
            for option in std::iter::once(priced)
                .chain(rules)
                .flat_map(|p| &p.options)
            {
                let r = &option.requirements;
                if let Some(address) = r
                    .extra
                    .get(crate::payment::FACILITATOR_ADDRESS_KEY)
                    .and_then(|v| v.as_str())
                {
                    known.insert(r.network.clone(), address.to_string());
                }
                if let Some(address) = r
                    .extra
                    .get(crate::payment::batch::RECEIVER_AUTHORIZER_KEY)
                    .and_then(|v| v.as_str())
                {
                    known.insert(authorizer_key(&r.network), address.to_string());
                }
            }
        }
    }
    known
}
