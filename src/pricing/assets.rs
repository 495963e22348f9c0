//! Tokens a route can be priced in, with the EIP-712 domain their authorizations are signed under.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub network: String,
    pub symbol: String,
    /// EIP-55 checksummed contract address.
    pub address: String,
    pub decimals: u8,
    /// EIP-712 domain `name` of the token contract.
    pub name: String,
    /// EIP-712 domain `version` of the token contract.
    pub version: String,
}

/// Assets known without configuration: (network, symbol, address, decimals, eip712 name, version).
const BUILT_IN: &[(&str, &str, &str, u8, &str, &str)] = &[
    (
        "eip155:8453",
        "USDC",
        "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
        6,
        "USD Coin",
        "2",
    ),
    (
        "eip155:84532",
        "USDC",
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        6,
        "USDC",
        "2",
    ),
    (
        "eip155:196",
        "USDT0",
        "0x779Ded0c9e1022225f8E0630b35a9b54bE713736",
        6,
        "USD\u{20AE}0",
        "1",
    ),
    (
        "eip155:196",
        "USDG",
        "0x4ae46a509f6b1d9056937ba4500cb143933d2dc8",
        6,
        "USDG",
        "2",
    ),
];

/// Lookup by (network, symbol) or (network, address); configured assets replace built-in ones.
#[derive(Debug, Clone, Default)]
pub struct AssetRegistry {
    by_symbol: HashMap<(String, String), Asset>,
}

impl AssetRegistry {
    pub fn with_built_ins() -> Self {
        let mut registry = Self::default();
        for (network, symbol, address, decimals, name, version) in BUILT_IN {
            registry.insert(Asset {
                network: network.to_string(),
                symbol: symbol.to_string(),
                address: checksum(address).unwrap_or_else(|| address.to_string()),
                decimals: *decimals,
                name: name.to_string(),
                version: version.to_string(),
            });
        }
        registry
    }

    pub fn insert(&mut self, asset: Asset) {
        self.by_symbol.insert(
            (asset.network.clone(), normalise_symbol(&asset.symbol)),
            asset,
        );
    }

    /// Finds an asset by symbol (`USDC`, `usd₮0`) or by contract address on `network`.
    pub fn find(&self, network: &str, symbol_or_address: &str) -> Option<&Asset> {
        if symbol_or_address.starts_with("0x") {
            return self.by_symbol.values().find(|a| {
                a.network == network && a.address.eq_ignore_ascii_case(symbol_or_address)
            });
        }
        self.by_symbol
            .get(&(network.to_string(), normalise_symbol(symbol_or_address)))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Asset> {
        self.by_symbol.values()
    }
}

/// `USD₮0` and `USDT0` name the same token; symbols are matched case-insensitively.
fn normalise_symbol(symbol: &str) -> String {
    symbol.replace('\u{20AE}', "T").to_ascii_uppercase()
}

/// EIP-55 form of a `0x` + 40 hex address, or `None` when it is not one.
pub fn checksum(address: &str) -> Option<String> {
    let hex = address
        .strip_prefix("0x")
        .or_else(|| address.strip_prefix("0X"))?;
    if hex.len() != 40 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    address
        .parse::<alloy_primitives::Address>()
        .ok()
        .map(|a| a.to_checksum(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_built_ins_by_symbol_or_address() {
        let registry = AssetRegistry::with_built_ins();
        let usdc = registry.find("eip155:84532", "usdc").unwrap();
        assert_eq!(usdc.name, "USDC");
        assert_eq!(
            registry.find("eip155:84532", "0x036cbd53842c5426634e7929541ec2318f3dcf7e"),
            Some(usdc)
        );
        assert_eq!(registry.find("eip155:196", "USD₮0").unwrap().name, "USD₮0");
        assert_eq!(
            registry.find("eip155:196", "usdg").unwrap().address,
            "0x4ae46a509F6b1D9056937BA4500cb143933D2dc8"
        );
        assert!(registry.find("eip155:1", "USDC").is_none());
    }

    #[test]
    fn checksums_addresses() {
        assert_eq!(
            checksum("0x036cbd53842c5426634e7929541ec2318f3dcf7e").as_deref(),
            Some("0x036CbD53842c5426634e7929541eC2318f3dCF7e")
        );
        assert_eq!(checksum("0x123"), None);
        assert_eq!(checksum("036cbd53842c5426634e7929541ec2318f3dcf7e"), None);
    }
}
