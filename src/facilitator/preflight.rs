//! Start-up checks against the vendor facilitators: every route's (scheme, network) must be
//! offered by the facilitator serving it, and the credentials must be accepted. An unreachable
//! facilitator is only a warning: the gateway starts and answers 502 until it is back.

use super::{AgentWallexFacilitator, FacilitatorError, Facilitators};
use crate::config::{FacilitatorConfig, FacilitatorKind, GatewayConfig};
use crate::pricing::FeeTier;

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
