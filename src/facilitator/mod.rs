//! Facilitators: the services that verify and settle payments on chain, behind one small trait.
//!
//! Each adapter turns its service's wire quirks (envelopes, auth, error codes, settlement states)
//! into the standard x402 responses and a typed [`FacilitatorError`]; the proxy never sees HTTP
//! details of a facilitator. A payment refused by a facilitator is an answer (`isValid: false`,
//! `success: false`), never an error: only a facilitator that cannot be used is an error.

mod agentwallex;
mod extension_responses;
mod http_x402;
mod local;
mod okx;
mod outcome;
mod preflight;
mod router;
mod transport;

pub use agentwallex::AgentWallexFacilitator;
pub use http_x402::HttpFacilitator;
pub use local::LocalFacilitator;
pub use okx::{okx_signature, okx_timestamp, OkxFacilitator};
pub use outcome::{
    client_reason, settle_answer, settle_outcome, settle_reply, unconfirmed_receipt, Judged,
};
pub use preflight::{
    fee_tiers_for, known_upto_settlers, preflight, resolve_upto_settlers, Preflight,
    PreflightError, UptoSettlers,
};
pub use router::{Facilitators, SettleAttempt};

use crate::config::{FacilitatorConfig, FacilitatorKind};
use crate::payment::{Failure, Finality};
use crate::x402::{ResourceInfo, SettleResponse, SupportedResponse, VerifyResponse};
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
    /// The route's `sync_settle`; adapters whose API knows it send it explicitly.
    #[serde(skip)]
    pub sync_settle: bool,
    /// The resource as configured, for APIs whose requirements carry it (OKX legacy).
    #[serde(skip)]
    pub resource: Option<ResourceInfo>,
}

impl FacilitatorRequest {
    /// The scheme of the configured requirements.
    pub fn scheme(&self) -> &str {
        self.payment_requirements
            .get("scheme")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The network of the configured requirements (CAIP-2 or, for v1, its v1 name).
    pub fn network(&self) -> &str {
        self.payment_requirements
            .get("network")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// Reads a standard settle answer's finality: `status: "pending"` or a missing transaction is
/// pending.
pub fn finality_of(response: &SettleResponse) -> Finality {
    match response.status.as_deref() {
        Some("pending") => Finality::Pending,
        _ if response.transaction.is_empty() => Finality::Pending,
        _ => Finality::Confirmed,
    }
}

/// A settle answer, typed, plus the JSON passed on to the buyer in `PAYMENT-RESPONSE`.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub response: SettleResponse,
    pub raw: Value,
    pub status: Finality,
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
    /// The facilitator refused the gateway's own credentials; the text names the cause (never the
    /// credential) for the operator's log.
    #[error("facilitator refused the gateway's credentials: {0}")]
    Credentials(String),
    #[error("facilitator is rate limiting the gateway: {0}")]
    RateLimited(String),
    /// The settlement was broadcast but not confirmed before the polling deadline: it may still
    /// land, so the authorization must never be accepted again.
    #[error(
        "settlement {transaction} was not confirmed within {deadline:?} (last status `{status}`)"
    )]
    Unconfirmed {
        transaction: String,
        status: String,
        deadline: Duration,
    },
}

impl FacilitatorError {
    /// Whether the request certainly had no effect at the facilitator (so nothing can have
    /// settled): it never arrived, or was refused before being processed.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_) | Self::Credentials(_) | Self::RateLimited(_)
        )
    }

    /// Whether a fallback facilitator may be asked instead (the service is down, not refusing).
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Timeout(_) => true,
            Self::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// What a client is told: a code and a fixed message, never the facilitator's own words.
    pub fn failure(&self) -> Failure {
        match self {
            Self::Timeout(_) => Failure::FacilitatorTimeout,
            Self::Unreachable(_) => Failure::FacilitatorUnavailable,
            Self::Status { .. } => Failure::FacilitatorError,
            Self::Garbage(_) => Failure::FacilitatorBadResponse,
            Self::Credentials(_) => Failure::FacilitatorCredentials,
            Self::RateLimited(_) => Failure::FacilitatorRateLimited,
            Self::Unconfirmed { .. } => Failure::SettlementUnconfirmed,
        }
    }
}

/// What a facilitator can say, later, about a settlement whose outcome was not final.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettlementLookup {
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
    ) -> Result<SettlementLookup, FacilitatorError> {
        Ok(SettlementLookup::Unknown)
    }
}

/// Builds the facilitator a configuration asks for.
pub fn from_config(config: &FacilitatorConfig) -> Result<Arc<dyn Facilitator>, FacilitatorError> {
    Ok(match config.kind {
        FacilitatorKind::X402 => Arc::new(HttpFacilitator::new(config)?),
        FacilitatorKind::Local => Arc::new(LocalFacilitator::new()),
        FacilitatorKind::Okx => Arc::new(OkxFacilitator::new(config)?),
        FacilitatorKind::AgentWallex => Arc::new(AgentWallexFacilitator::new(config)?),
    })
}
