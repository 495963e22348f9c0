//! Sizes as operators write them: whole bytes (`1048576`) or `"512KiB"`, `"1MiB"`.

/// Reads a size as an operator writes it: whole bytes (`1048576`), or a number with a unit:
/// `B`, `KiB`/`KB`/`K`, `MiB`/`MB`/`M`, `GiB`/`GB`/`G` (all in 1024s; case and spaces ignored):
/// `"512KiB"`, `"1 MiB"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("size `{text}` must be whole bytes or a whole number with a unit, e.g. \"512KiB\" or \"1MiB\"")
    })?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "size `{text}` has an unknown unit: B, KiB, MiB or GiB (e.g. \"1MiB\")"
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("size `{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_in_bytes_or_with_a_binary_unit() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("512KiB"), Ok(524_288));
        assert_eq!(parse_size("1 MiB"), Ok(1_048_576));
        assert_eq!(parse_size("2mb"), Ok(2_097_152));
        assert_eq!(parse_size("64k"), Ok(65_536));
        assert_eq!(parse_size("1GiB"), Ok(1_073_741_824));
        assert_eq!(parse_size("10B"), Ok(10));
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1TiB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999GiB")
            .unwrap_err()
            .contains("out of range"));
    }
}
