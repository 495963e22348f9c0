//! EIP-712 hashing of EIP-3009 `TransferWithAuthorization` and signer recovery.

use crate::x402::Authorization;
use alloy_primitives::{Address, FixedBytes, Signature, B256, U256};
use alloy_sol_types::{Eip712Domain, SolStruct};
use std::borrow::Cow;

alloy_sol_types::sol! {
    /// The EIP-3009 message a buyer signs.
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("authorization field `{0}` is malformed")]
    Field(&'static str),
    #[error("signature is not hex")]
    NotHex,
    #[error("signature is not 65 bytes")]
    NotEoaLength,
    #[error("signature has a non-canonical (high) s value")]
    HighS,
    #[error("signature does not recover to a key")]
    Unrecoverable,
}

fn address(text: &str, field: &'static str) -> Result<Address, SignatureError> {
    let hex = text
        .strip_prefix("0x")
        .ok_or(SignatureError::Field(field))?;
    if hex.len() != 40 {
        return Err(SignatureError::Field(field));
    }
    text.parse().map_err(|_| SignatureError::Field(field))
}

fn uint(text: &str, field: &'static str) -> Result<U256, SignatureError> {
    if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Field(field));
    }
    U256::from_str_radix(text, 10).map_err(|_| SignatureError::Field(field))
}

/// The EIP-712 digest a signer signs for `authorization` on token `asset` of `chain_id`.
pub fn authorization_signing_hash(
    authorization: &Authorization,
    token_name: &str,
    token_version: &str,
    chain_id: u64,
    asset: &str,
) -> Result<B256, SignatureError> {
    let nonce_hex = authorization
        .nonce
        .strip_prefix("0x")
        .ok_or(SignatureError::Field("nonce"))?;
    if nonce_hex.len() != 64 {
        return Err(SignatureError::Field("nonce"));
    }
    let nonce: FixedBytes<32> = authorization
        .nonce
        .parse()
        .map_err(|_| SignatureError::Field("nonce"))?;
    let message = TransferWithAuthorization {
        from: address(&authorization.from, "from")?,
        to: address(&authorization.to, "to")?,
        value: uint(&authorization.value, "value")?,
        validAfter: uint(&authorization.valid_after, "validAfter")?,
        validBefore: uint(&authorization.valid_before, "validBefore")?,
        nonce,
    };
    let domain = Eip712Domain {
        name: Some(Cow::Owned(token_name.to_string())),
        version: Some(Cow::Owned(token_version.to_string())),
        chain_id: Some(U256::from(chain_id)),
        verifying_contract: Some(address(asset, "asset")?),
        salt: None,
    };
    Ok(message.eip712_signing_hash(&domain))
}

/// Recovers the address that produced a 65-byte `r‖s‖v` signature over `digest`.
pub fn recover_signer(signature_hex: &str, digest: &B256) -> Result<Address, SignatureError> {
    let hex = signature_hex.strip_prefix("0x").unwrap_or(signature_hex);
    let bytes = alloy_primitives::hex::decode(hex).map_err(|_| SignatureError::NotHex)?;
    if bytes.len() != 65 {
        return Err(SignatureError::NotEoaLength);
    }
    let signature =
        Signature::try_from(bytes.as_slice()).map_err(|_| SignatureError::Unrecoverable)?;
    // Token contracts reject high-s signatures, so refusing them here changes no outcome.
    if signature.normalize_s().is_some() {
        return Err(SignatureError::HighS);
    }
    signature
        .recover_address_from_prehash(digest)
        .map_err(|_| SignatureError::Unrecoverable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_hash_is_the_eip3009_one() {
        let type_hash = alloy_primitives::keccak256(
            "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)",
        );
        assert_eq!(
            type_hash.to_string(),
            "0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267"
        );
        assert_eq!(
            TransferWithAuthorization::eip712_type_hash(&TransferWithAuthorization {
                from: Address::ZERO,
                to: Address::ZERO,
                value: U256::ZERO,
                validAfter: U256::ZERO,
                validBefore: U256::ZERO,
                nonce: FixedBytes::ZERO,
            }),
            type_hash
        );
    }

    #[test]
    fn malformed_fields_are_named() {
        let mut a = Authorization {
            from: "0x0000000000000000000000000000000000000001".into(),
            to: "0x0000000000000000000000000000000000000002".into(),
            value: "1".into(),
            valid_after: "0".into(),
            valid_before: "9".into(),
            nonce: format!("0x{}", "00".repeat(32)),
        };
        let asset = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
        assert!(authorization_signing_hash(&a, "USDC", "2", 84532, asset).is_ok());
        a.value = "-1".into();
        assert_eq!(
            authorization_signing_hash(&a, "USDC", "2", 84532, asset),
            Err(SignatureError::Field("value"))
        );
        a.value = "1".into();
        a.nonce = "0x01".into();
        assert_eq!(
            authorization_signing_hash(&a, "USDC", "2", 84532, asset),
            Err(SignatureError::Field("nonce"))
        );
        assert_eq!(
            recover_signer("0xzz", &B256::ZERO),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            recover_signer("0xabcd", &B256::ZERO),
            Err(SignatureError::NotEoaLength)
        );
    }
}
