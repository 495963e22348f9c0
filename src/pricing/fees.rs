//! Facilitator fee schedules: which tier a price falls in and what the seller keeps.
//!
//! Tiers are written in dollars (`"10"`, `""` for no upper bound) and percentages (`"2.0"`), as
//! AgentWallex publishes them; every computation is in atomic units, without floating point.

use super::money::{parse_price, MoneyError};

/// One published tier: amounts from `min` (inclusive) to `max` (exclusive, `None` = no bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeTier {
    pub min: String,
    pub max: Option<String>,
    pub percentage: String,
}

/// What a price costs in fees under a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeQuote {
    pub tier: FeeTier,
    /// The fee in atomic units, rounded up so that `net` is what the seller receives at least.
    pub fee: u128,
    pub net: u128,
}

/// A decimal dollar amount in atomic units of a token with `decimals`; zero allowed.
fn units(text: &str, decimals: u8) -> Option<u128> {
    match parse_price(text, decimals) {
        Ok(n) => Some(n),
        Err(MoneyError::Zero(_)) => Some(0),
        Err(_) => None,
    }
}

/// `"2.5"` → (25, 10): the percentage as a fraction numerator / denominator of one percent.
fn percentage(text: &str) -> Option<(u128, u128)> {
    let text = text.trim().trim_end_matches('%');
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .chars()
            .chain(fraction.chars())
            .all(|c| c.is_ascii_digit())
        || fraction.len() > 18
    {
        return None;
    }
    let numerator: u128 = format!("{whole}{fraction}").parse().ok()?;
    Some((numerator, 10u128.pow(fraction.len() as u32)))
}

/// The tier `amount` (atomic units, `decimals`) falls in, the fee and the net amount; `None` when
/// no tier covers it or a tier cannot be read.
pub fn quote_fee(tiers: &[FeeTier], amount: u128, decimals: u8) -> Option<FeeQuote> {
    let tier = tiers.iter().find(|t| {
        let min_ok = units(&t.min, decimals).is_some_and(|min| amount >= min);
        let max_ok = match t.max.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(max) => units(max, decimals).is_some_and(|max| amount < max),
        };
        min_ok && max_ok
    })?;
    let (numerator, denominator) = percentage(&tier.percentage)?;
    let scaled = amount.checked_mul(numerator)?;
    let divisor = denominator.checked_mul(100)?;
    let fee = scaled.div_ceil(divisor).min(amount);
    Some(FeeQuote {
        tier: tier.clone(),
        fee,
        net: amount - fee,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Vec<FeeTier> {
        [
            ("0", "10", "2.0"),
            ("10", "100", "1.0"),
            ("100", "1000", "0.5"),
            ("1000", "", "0.25"),
        ]
        .iter()
        .map(|(min, max, pct)| FeeTier {
            min: min.to_string(),
            max: (!max.is_empty()).then(|| max.to_string()),
            percentage: pct.to_string(),
        })
        .collect()
    }

    #[test]
    fn a_cent_pays_two_percent_and_the_seller_keeps_the_rest() {
        let q = quote_fee(&published(), 10_000, 6).unwrap();
        assert_eq!(q.tier.percentage, "2.0");
        assert_eq!((q.fee, q.net), (200, 9_800));
    }

    #[test]
    fn tier_bounds_are_inclusive_below_and_exclusive_above() {
        assert_eq!(
            quote_fee(&published(), 10_000_000, 6)
                .unwrap()
                .tier
                .percentage,
            "1.0"
        );
        assert_eq!(
            quote_fee(&published(), 9_999_999, 6)
                .unwrap()
                .tier
                .percentage,
            "2.0"
        );
        let top = quote_fee(&published(), 5_000_000_000, 6).unwrap();
        assert_eq!(
            (top.tier.percentage.as_str(), top.fee),
            ("0.25", 12_500_000)
        );
    }

    #[test]
    fn fractions_of_a_unit_round_the_fee_up() {
        // 2% of 1 atomic unit is 0.02: the seller must not be promised the whole unit.
        assert_eq!(quote_fee(&published(), 1, 6).unwrap().net, 0);
        assert_eq!(quote_fee(&[], 1, 6), None);
    }
}
