//! Prices written for humans (`"$0.01"`) turned into atomic token units without floating point.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("price `{0}` is not a decimal amount such as \"$0.01\"")]
    NotDecimal(String),
    #[error("price `{price}` has more decimals than the asset's {decimals}")]
    TooPrecise { price: String, decimals: u8 },
    #[error("price `{0}` is zero; use `free = true` for a route without payment")]
    Zero(String),
    #[error("price `{0}` is too large")]
    TooLarge(String),
}

/// Parses `"$0.01"` (the `$` is optional) into atomic units of a token with `decimals` decimals.
pub fn parse_price(price: &str, decimals: u8) -> Result<u128, MoneyError> {
    let text = price.trim();
    let text = text
        .strip_prefix('$')
        .unwrap_or(text)
        .trim()
        .replace('_', "");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let digits_only = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_only(whole) || !digits_only(fraction) {
        return Err(MoneyError::NotDecimal(price.to_string()));
    }
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > decimals as usize {
        return Err(MoneyError::TooPrecise {
            price: price.to_string(),
            decimals,
        });
    }
    let scale = 10u128
        .checked_pow(decimals as u32)
        .ok_or_else(|| MoneyError::TooLarge(price.to_string()))?;
    let too_large = || MoneyError::TooLarge(price.to_string());
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_large())?
    };
    let padded = format!("{fraction:0<width$}", width = decimals as usize);
    let fraction: u128 = if padded.is_empty() {
        0
    } else {
        padded.parse().map_err(|_| too_large())?
    };
    let atomic = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(too_large)?;
    if atomic == 0 {
        return Err(MoneyError::Zero(price.to_string()));
    }
    Ok(atomic)
}

/// Atomic units as a decimal number of whole tokens: `10000` with 6 decimals is `0.01`.
pub fn format_units(amount: u128, decimals: u8) -> String {
    let scale = 10u128.pow(u32::from(decimals.min(38)));
    let fraction = format!("{:0width$}", amount % scale, width = decimals as usize);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}", amount / scale)
    } else {
        format!("{}.{fraction}", amount / scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_become_atomic_units() {
        assert_eq!(parse_price("$0.01", 6), Ok(10_000));
        assert_eq!(parse_price("$1", 6), Ok(1_000_000));
        assert_eq!(parse_price("0.000001", 6), Ok(1));
        assert_eq!(parse_price("$2.50", 6), Ok(2_500_000));
        assert_eq!(parse_price("$.5", 6), Ok(500_000));
        assert_eq!(parse_price("$1_000", 2), Ok(100_000));
    }

    #[test]
    fn bad_prices_say_why() {
        assert_eq!(
            parse_price("$0.0000001", 6),
            Err(MoneyError::TooPrecise {
                price: "$0.0000001".into(),
                decimals: 6
            })
        );
        assert_eq!(parse_price("$0", 6), Err(MoneyError::Zero("$0".into())));
        assert_eq!(
            parse_price("ten", 6),
            Err(MoneyError::NotDecimal("ten".into()))
        );
        assert_eq!(
            parse_price("$-1", 6),
            Err(MoneyError::NotDecimal("$-1".into()))
        );
        assert_eq!(
            parse_price("$1e3", 6),
            Err(MoneyError::NotDecimal("$1e3".into()))
        );
        assert!(matches!(
            parse_price("$999999999999999999999999999999999999", 6),
            Err(MoneyError::TooLarge(_))
        ));
    }
}
