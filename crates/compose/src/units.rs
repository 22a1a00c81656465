//! go-units `RAMInBytes`: `128M`, `1.5g`, `512kb`, `1024` (binary multiples).

/// Parses a memory size the way go-units RAMInBytes does (case-insensitive suffix
/// b, k, m, g, t, p with an optional `b`/`ib`, multiples of 1024).
pub(crate) fn ram_in_bytes(s: &str) -> Result<i64, String> {
    let invalid = || format!("invalid size: '{s}'");
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(num_end);
    if num.is_empty() {
        return Err(invalid());
    }
    let value: f64 = num.parse().map_err(|_| invalid())?;
    let suffix = suffix.trim_start_matches(' ').to_ascii_lowercase();
    let mult: f64 = match suffix.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024f64.powi(2),
        "g" | "gb" | "gib" => 1024f64.powi(3),
        "t" | "tb" | "tib" => 1024f64.powi(4),
        "p" | "pb" | "pib" => 1024f64.powi(5),
        _ => return Err(invalid()),
    };
    Ok((value * mult) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units() {
        assert_eq!(ram_in_bytes("128M"), Ok(134_217_728));
        assert_eq!(ram_in_bytes("64m"), Ok(67_108_864));
        assert_eq!(ram_in_bytes("1.5G"), Ok(1_610_612_736));
        assert_eq!(ram_in_bytes("1024"), Ok(1024));
        assert_eq!(ram_in_bytes("512kb"), Ok(524_288));
        assert!(ram_in_bytes("lots").is_err());
    }
}
