//! Facilitators: the services that verify and settle payments on chain, behind one small trait.
//!
//! Each adapter turns its service's wire quirks into the standard x402 responses and a typed
//! [`FacilitatorError`]; the proxy never sees HTTP details of a facilitator.

mod http_x402;
mod local;

pub use http_x402::HttpFacilitator;
pub use local::LocalFacilitator;

use crate::config::{FacilitatorConfig, FacilitatorKind};
use crate::x402::{SettleResponse, SupportedResponse, VerifyResponse};
use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Body of `/verify` and `/settle`: the payment as the client sent it and the requirements from
/// configuration.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest {
    pub x402_version: u8,
    pub payment_payload: Value,
    pub payment_requirements: Value,
}

/// A settle answer, typed, plus the facilitator's JSON as received (passed on to the buyer).
#[derive(Debug, Clone)]
pub struct Settlement {
    pub response: SettleResponse,
    pub raw: Value,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FacilitatorError {
    #[error("facilitator did not answer within {0:?}")]
    Timeout(Duration),
    #[error("facilitator is unreachable: {0}")]
    Unreachable(String),
    #[error("facilitator answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("facilitator answered something that is not an x402 response: {0}")]
    Garbage(String),
}

impl FacilitatorError {
    /// Whether the request certainly never reached the facilitator (so nothing can have settled).
    pub fn never_sent(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}

/// What a facilitator can say, later, about a settlement whose outcome was not final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettlementStatus {
    Settled {
        transaction: String,
    },
    Failed {
        reason: String,
    },
    /// Known to the facilitator, not final yet.
    Pending,
    /// The facilitator has no way to tell (no status API, or no transaction to ask about).
    Unknown,
}

#[async_trait]
pub trait Facilitator: Send + Sync {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;
    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError>;
    async fn settle(&self, request: &FacilitatorRequest) -> Result<Settlement, FacilitatorError>;
    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError>;
    /// Reconciles a pending settlement. Facilitators without a status API keep the default, and
    /// such entries stay pending in the journal for an operator to check on chain.
    async fn settlement_status(
        &self,
        _transaction: &str,
        _network: &str,
    ) -> Result<SettlementStatus, FacilitatorError> {
        Ok(SettlementStatus::Unknown)
    }
}

/// Builds the facilitator a configuration asks for.
pub fn from_config(config: &FacilitatorConfig) -> Result<Arc<dyn Facilitator>, FacilitatorError> {
    Ok(match config.kind {
        FacilitatorKind::X402 => Arc::new(HttpFacilitator::new(config)?),
        FacilitatorKind::Local => Arc::new(LocalFacilitator::new()),
    })
}
