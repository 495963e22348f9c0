//! The buyer's side of `exact` on EVM: sign an EIP-3009 authorization for an advertised option and
//! encode it as a payment header. Used by `examples/pay.rs`, the test suite and the benchmark.

use crate::payment::authorization_signing_hash;
use crate::x402::{chain_id_of, encode_header_json, Authorization, PaymentRequirements};
use alloy_primitives::{Address, B256};
use k256::ecdsa::SigningKey;

#[derive(Debug, thiserror::Error)]
pub enum BuyerError {
    #[error("private key must be 32 bytes of hex")]
    BadKey,
    #[error("network `{0}` is not an EVM network")]
    Network(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// A buyer's signing key.
pub struct Wallet {
    key: SigningKey,
    address: Address,
}

impl Wallet {
    pub fn from_hex(hex: &str) -> Result<Self, BuyerError> {
        let bytes = alloy_primitives::hex::decode(hex.trim().trim_start_matches("0x"))
            .map_err(|_| BuyerError::BadKey)?;
        let key = SigningKey::from_slice(&bytes).map_err(|_| BuyerError::BadKey)?;
        let address = Address::from_public_key(key.verifying_key());
        Ok(Self { key, address })
    }

    pub fn address(&self) -> String {
        self.address.to_checksum(None)
    }

    /// Signs `authorization` for the token described by `requirements`; returns `0x` r‖s‖v hex.
    pub fn sign(
        &self,
        authorization: &Authorization,
        requirements: &PaymentRequirements,
        chain_id: u64,
    ) -> Result<String, BuyerError> {
        let name = requirements
            .extra
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let version = requirements
            .extra
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let digest =
            authorization_signing_hash(authorization, name, version, chain_id, &requirements.asset)
                .map_err(|e| BuyerError::Sign(e.to_string()))?;
        self.sign_digest(&digest)
    }

    /// Signs an EIP-712 digest computed elsewhere (a `batch-settlement` voucher, for one); returns
    /// `0x` r‖s‖v hex, the form the gateway and the contracts recover.
    pub fn sign_digest(&self, digest: &B256) -> Result<String, BuyerError> {
        let (signature, recovery) = self
            .key
            .sign_prehash_recoverable(digest.as_slice())
            .map_err(|e| BuyerError::Sign(e.to_string()))?;
        let mut bytes = signature.to_bytes().to_vec();
        bytes.push(27 + recovery.to_byte());
        Ok(format!("0x{}", alloy_primitives::hex::encode(bytes)))
    }

    /// An authorization paying `requirements` in full, valid from `now - 600` for its max timeout.
    pub fn authorize(
        &self,
        requirements: &PaymentRequirements,
        now: u64,
        nonce: [u8; 32],
    ) -> Authorization {
        Authorization {
            from: self.address(),
            to: requirements.pay_to.clone(),
            value: requirements.amount.clone(),
            valid_after: now.saturating_sub(600).to_string(),
            valid_before: (now + requirements.max_timeout_seconds).to_string(),
            nonce: format!("0x{}", alloy_primitives::hex::encode(nonce)),
        }
    }

    /// A complete v2 `PAYMENT-SIGNATURE` value for `requirements`.
    pub fn payment_header_v2(
        &self,
        requirements: &PaymentRequirements,
        now: u64,
        nonce: [u8; 32],
    ) -> Result<String, BuyerError> {
        let authorization = self.authorize(requirements, now, nonce);
        let chain_id = chain_id_of(&requirements.network)
            .ok_or_else(|| BuyerError::Network(requirements.network.clone()))?;
        let signature = self.sign(&authorization, requirements, chain_id)?;
        Ok(encode_header_json(&serde_json::json!({
            "x402Version": 2,
            "accepted": requirements,
            "payload": {"signature": signature, "authorization": authorization},
        })))
    }
}

/// 32 random bytes for an authorization nonce.
pub fn random_nonce() -> [u8; 32] {
    rand::random()
}
