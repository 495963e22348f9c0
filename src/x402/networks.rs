//! Mapping between CAIP-2 network ids (v2) and the legacy v1 network names.

/// v1 name ↔ EVM chain id, for the networks official v1 clients know.
const V1_NETWORKS: &[(&str, u64)] = &[
    ("base", 8453),
    ("base-sepolia", 84532),
    ("avalanche", 43114),
    ("avalanche-fuji", 43113),
    ("iotex", 4689),
    ("sei", 1329),
    ("sei-testnet", 1328),
    ("polygon", 137),
    ("polygon-amoy", 80002),
    ("peaq", 3338),
    ("story", 1514),
    ("educhain", 41923),
    ("abstract", 2741),
    ("abstract-testnet", 11124),
    ("skale-base-sepolia", 324705682),
];

/// The EVM chain id of a CAIP-2 (`eip155:N`) or v1 network name.
pub fn chain_id_of(network: &str) -> Option<u64> {
    if let Some(id) = network.strip_prefix("eip155:") {
        return id.parse().ok();
    }
    V1_NETWORKS
        .iter()
        .find(|(name, _)| *name == network)
        .map(|(_, id)| *id)
}

/// The v1 name of a CAIP-2 network, when v1 clients know one.
pub fn v1_name_of(caip2: &str) -> Option<&'static str> {
    let id = caip2.strip_prefix("eip155:")?.parse::<u64>().ok()?;
    V1_NETWORKS
        .iter()
        .find(|(_, chain)| *chain == id)
        .map(|(name, _)| *name)
}

/// The CAIP-2 id of a v1 network name.
pub fn v2_name_of(v1_name: &str) -> Option<String> {
    V1_NETWORKS
        .iter()
        .find(|(name, _)| *name == v1_name)
        .map(|(_, id)| format!("eip155:{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_base_sepolia_both_ways() {
        assert_eq!(v1_name_of("eip155:84532"), Some("base-sepolia"));
        assert_eq!(v2_name_of("base-sepolia").as_deref(), Some("eip155:84532"));
        assert_eq!(chain_id_of("base"), Some(8453));
        assert_eq!(chain_id_of("eip155:196"), Some(196));
        assert_eq!(v1_name_of("eip155:196"), None, "X Layer has no v1 name");
        assert_eq!(chain_id_of("solana:abc"), None);
    }
}
