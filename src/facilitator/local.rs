//! `kind = "local"`: a test-mode facilitator inside the gateway. It performs every check a real
//! facilitator performs without a chain (signature, recipient, amount, time window, nonce reuse)
//! and records settlements without moving any money. It is for demos and trials only.

use super::{Facilitator, FacilitatorError, FacilitatorRequest, Settlement};
use crate::payment::check_authorization;
use crate::payment::Finality;
use crate::x402::{
    chain_id_of, v2_name_of, PaymentPayload, PaymentRequirements, SettleResponse, SupportedKind,
    SupportedResponse, VerifyResponse,
};
use async_trait::async_trait;
use dashmap::DashSet;

#[derive(Default)]
pub struct LocalFacilitator {
    settled: DashSet<String>,
}

impl LocalFacilitator {
    pub fn new() -> Self {
        tracing::warn!(
            "TEST MODE: facilitator kind = \"local\" checks payments but settles nothing on chain; \
             no money moves. Never use it in production."
        );
        Self::default()
    }

    /// Runs the checks; returns (payer, network, replay key) or the refusal reason.
    fn check(request: &FacilitatorRequest) -> Result<(String, String, String), (String, String)> {
        let invalid = |reason: &str, message: String| (reason.to_string(), message);
        let payment = PaymentPayload::from_json(&request.payment_payload)
            .map_err(|e| invalid("invalid_payload", e))?;
        let mut requirements = request.payment_requirements.clone();
        if request.x402_version == 1 {
            // v1 requirements name the amount and network differently; read them in v2 terms.
            if let Some(obj) = requirements.as_object_mut() {
                if let Some(amount) = obj.remove("maxAmountRequired") {
                    obj.insert("amount".into(), amount);
                }
                if let Some(network) = obj
                    .get("network")
                    .and_then(|n| n.as_str())
                    .and_then(v2_name_of)
                {
                    obj.insert("network".into(), network.into());
                }
            }
        }
        let requirements: PaymentRequirements = serde_json::from_value(requirements)
            .map_err(|e| invalid("invalid_payment_requirements", e.to_string()))?;
        let chain_id = chain_id_of(&requirements.network).ok_or_else(|| {
            invalid(
                "invalid_network",
                format!("unknown network {}", requirements.network),
            )
        })?;
        let amount: u128 = requirements.amount.parse().map_err(|_| {
            invalid(
                "invalid_payment_requirements",
                "amount is not a number".into(),
            )
        })?;
        if payment.scheme() != requirements.scheme {
            return Err(invalid(
                "invalid_exact_evm_scheme",
                "scheme differs from the requirements".into(),
            ));
        }
        // The local facilitator moves no money and cannot stand in for a Permit2 settler.
        let exact = payment.exact().ok_or_else(|| {
            invalid(
                "unsupported_scheme",
                format!(
                    "the local facilitator does not settle `{}`",
                    payment.scheme()
                ),
            )
        })?;
        let now = crate::time::unix_now();
        let verified = check_authorization(exact, &requirements, chain_id, amount, now)
            .map_err(|r| invalid(r.reason, r.message))?;
        Ok((
            verified.payer,
            requirements.network,
            verified.replay_key.to_hex(),
        ))
    }
}

#[async_trait]
impl Facilitator for LocalFacilitator {
    fn name(&self) -> &str {
        "local"
    }

    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError> {
        Ok(match Self::check(request) {
            Ok((payer, _, key)) if self.settled.contains(&key) => VerifyResponse {
                extra: None,
                is_valid: false,
                invalid_reason: Some("invalid_exact_evm_nonce_already_used".into()),
                invalid_message: Some("this authorization was already settled".into()),
                payer: Some(payer),
            },
            Ok((payer, _, _)) => VerifyResponse {
                extra: None,
                is_valid: true,
                invalid_reason: None,
                invalid_message: None,
                payer: Some(payer),
            },
            Err((reason, message)) => VerifyResponse {
                extra: None,
                is_valid: false,
                invalid_reason: Some(reason),
                invalid_message: Some(message),
                payer: None,
            },
        })
    }

    async fn settle(&self, request: &FacilitatorRequest) -> Result<Settlement, FacilitatorError> {
        let response = match Self::check(request) {
            Ok((payer, network, key)) => {
                if self.settled.insert(key.clone()) {
                    // A stable stand-in for a transaction hash, so receipts can refer to it.
                    let transaction = alloy_primitives::keccak256(key.as_bytes()).to_string();
                    tracing::warn!(%payer, %transaction, "TEST MODE settlement recorded; no money moved");
                    SettleResponse {
                        extra: None,
                        success: true,
                        error_reason: None,
                        error_message: None,
                        payer: Some(payer),
                        transaction,
                        network,
                        status: None,
                        amount: None,
                    }
                } else {
                    SettleResponse {
                        extra: None,
                        success: false,
                        error_reason: Some("invalid_exact_evm_nonce_already_used".into()),
                        error_message: Some("this authorization was already settled".into()),
                        payer: Some(payer),
                        transaction: String::new(),
                        network,
                        status: None,
                        amount: None,
                    }
                }
            }
            Err((reason, message)) => SettleResponse {
                extra: None,
                success: false,
                error_reason: Some(reason),
                error_message: Some(message),
                payer: None,
                transaction: String::new(),
                network: String::new(),
                status: None,
                amount: None,
            },
        };
        let raw = serde_json::to_value(&response)
            .map_err(|e| FacilitatorError::Garbage(e.to_string()))?;
        Ok(Settlement {
            response,
            raw,
            status: Finality::Confirmed,
        })
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        let kinds = ["eip155:8453", "eip155:84532", "eip155:196"]
            .iter()
            .map(|n| SupportedKind {
                x402_version: 2,
                scheme: "exact".into(),
                network: n.to_string(),
                extra: None,
            })
            .collect();
        Ok(SupportedResponse { kinds })
    }
}
