//! EIP-712 hashing of EIP-3009 `TransferWithAuthorization` and signer recovery.

use crate::x402::Authorization;
use alloy_primitives::{keccak256, Address, FixedBytes, Signature, B256, U256};
use alloy_sol_types::Eip712Domain;
use std::borrow::Cow;

/// `keccak256("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")`,
/// a constant rather than hashed from the type's text at every payment.
const TRANSFER_WITH_AUTHORIZATION_TYPEHASH: B256 =
    alloy_primitives::b256!("7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267");

#[cfg(test)]
alloy_sol_types::sol! {
    /// The EIP-3009 message a buyer signs (the reference the hand-rolled hashing is tested against).
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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

/// The EIP-712 domain of one token on one chain, hashed once: it is the same for every payment of
/// a configured option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDomain {
    separator: B256,
}

impl TokenDomain {
    pub fn new(
        token_name: &str,
        token_version: &str,
        chain_id: u64,
        asset: &str,
    ) -> Result<Self, SignatureError> {
        let domain = Eip712Domain {
            name: Some(Cow::Owned(token_name.to_string())),
            version: Some(Cow::Owned(token_version.to_string())),
            chain_id: Some(U256::from(chain_id)),
            verifying_contract: Some(address(asset, "asset")?),
            salt: None,
        };
        Ok(Self {
            separator: domain.separator(),
        })
    }

    /// A domain whose separator was hashed before.
    pub fn from_separator(separator: B256) -> Self {
        Self { separator }
    }

    pub fn separator(&self) -> B256 {
        self.separator
    }

    /// The domain named by `extra.name` / `extra.version` of `requirements` (empty when absent).
    pub fn for_requirements(
        requirements: &crate::x402::PaymentRequirements,
        chain_id: u64,
    ) -> Result<Self, SignatureError> {
        let text = |key: &str| {
            requirements
                .extra
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
        };
        Self::new(text("name"), text("version"), chain_id, &requirements.asset)
    }
}

/// The EIP-712 digest a signer signs for `authorization` in `domain`.
pub fn authorization_digest(
    authorization: &Authorization,
    domain: &TokenDomain,
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
    // hashStruct: the type hash, then each field as one 32-byte word.
    let mut encoded = [0u8; 7 * 32];
    encoded[..32].copy_from_slice(TRANSFER_WITH_AUTHORIZATION_TYPEHASH.as_slice());
    encoded[44..64].copy_from_slice(address(&authorization.from, "from")?.as_slice());
    encoded[76..96].copy_from_slice(address(&authorization.to, "to")?.as_slice());
    let words = [
        (&authorization.value, "value"),
        (&authorization.valid_after, "validAfter"),
        (&authorization.valid_before, "validBefore"),
    ];
    for (i, (text, field)) in words.into_iter().enumerate() {
        let start = 96 + i * 32;
        encoded[start..start + 32].copy_from_slice(&uint(text, field)?.to_be_bytes::<32>());
    }
    encoded[192..].copy_from_slice(nonce.as_slice());
    let mut digest_input = [0u8; 2 + 32 + 32];
    digest_input[..2].copy_from_slice(&[0x19, 0x01]);
    digest_input[2..34].copy_from_slice(domain.separator.as_slice());
    digest_input[34..].copy_from_slice(keccak256(encoded).as_slice());
    Ok(keccak256(digest_input))
}

/// The EIP-712 digest a signer signs for `authorization` on token `asset` of `chain_id`.
pub fn authorization_signing_hash(
    authorization: &Authorization,
    token_name: &str,
    token_version: &str,
    chain_id: u64,
    asset: &str,
) -> Result<B256, SignatureError> {
    let domain = TokenDomain::new(token_name, token_version, chain_id, asset)?;
    authorization_digest(authorization, &domain)
}

/// Recovers the address that produced a 65-byte `r‖s‖v` signature over `digest`.
pub fn recover_signer(signature_hex: &str, digest: &B256) -> Result<Address, SignatureError> {
    let hex = signature_hex.strip_prefix("0x").unwrap_or(signature_hex);
    if hex.len() != 130 {
        return Err(match alloy_primitives::hex::decode(hex) {
            Ok(_) => SignatureError::NotEoaLength,
            Err(_) => SignatureError::NotHex,
        });
    }
    let mut bytes = [0u8; 65];
    alloy_primitives::hex::decode_to_slice(hex, &mut bytes).map_err(|_| SignatureError::NotHex)?;
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
    use alloy_sol_types::SolStruct;

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
    fn digest_is_the_eip712_one() {
        let a = Authorization {
            from: "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266".into(),
            to: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
            value: "10000".into(),
            valid_after: "1740672089".into(),
            valid_before:
                "115792089237316195423570985008687907853269984665640564039457584007913129639935"
                    .into(),
            nonce: format!("0x{}", "ab".repeat(32)),
        };
        let asset = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
        let reference = TransferWithAuthorization {
            from: a.from.parse().unwrap(),
            to: a.to.parse().unwrap(),
            value: U256::from(10_000u64),
            validAfter: U256::from(1_740_672_089u64),
            validBefore: U256::MAX,
            nonce: a.nonce.parse().unwrap(),
        }
        .eip712_signing_hash(&Eip712Domain {
            name: Some("USDC".into()),
            version: Some("2".into()),
            chain_id: Some(U256::from(84532u64)),
            verifying_contract: Some(asset.parse().unwrap()),
            salt: None,
        });
        assert_eq!(
            authorization_signing_hash(&a, "USDC", "2", 84532, asset).unwrap(),
            reference
        );
        let other_chain = TokenDomain::new("USDC", "2", 8453, asset).unwrap();
        assert_ne!(authorization_digest(&a, &other_chain).unwrap(), reference);
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
