//! Human byte sizes, as operators write them in the configuration (`"50GiB"`, `"500MiB"`, `"10G"`)
//! and as wharf prints them in reports (`"1.5 GiB"`).
//!
//! The units follow what the tools operators already use mean by them: the IEC units (`KiB`, `MiB`,
//! `GiB`, `TiB`) and the bare letters (`K`, `M`, `G`, `T`, as nginx's `max_size=10g` and sccache's
//! `10G` write them) are powers of 1024; the SI units with a `B` (`KB`, `MB`, `GB`, `TB`) are powers
//! of 1000, as a disk vendor means them. Units are case-insensitive, so `10gib` and `10GiB` agree.

/// Parses a size: a whole or decimal number, optional spaces, and a unit (`B` or none for bytes).
///
/// # Errors
/// A message saying what is wrong and what to write, without the key (the caller adds it).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("{text:?} is not a size; write a number and a unit, e.g. \"50GiB\", \"500MiB\" or \"10G\"")
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') {
        return Err(bad());
    }
    let too_big = || format!("{text:?} is too large; sizes go up to 16 EiB");
    let whole: u64 = whole.parse().map_err(|_| too_big())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_big)?;
    if !fraction.is_empty() {
        // A fraction of the unit, exact to the byte: at most 12 digits keep the product in range.
        if fraction.len() > 12 {
            return Err(bad());
        }
        let digits: u64 = fraction.parse().map_err(|_| bad())?;
        let scale = 10u64.pow(u32::try_from(fraction.len()).unwrap_or(12));
        let part = u128::from(digits) * u128::from(multiplier) / u128::from(scale);
        bytes = bytes
            .checked_add(u64::try_from(part).map_err(|_| too_big())?)
            .ok_or_else(too_big)?;
    }
    Ok(bytes)
}

/// Formats a byte count for people: `512 B`, `1.5 KiB`, `20.0 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "one decimal is all that is printed"
    )]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1024", Some(1024)),
            ("1024B", Some(1024)),
            ("1 b", Some(1)),
            ("1K", Some(1024)),
            ("1KiB", Some(1024)),
            ("1kb", Some(1000)),
            ("500MiB", Some(500 << 20)),
            ("500MB", Some(500_000_000)),
            ("10G", Some(10 << 30)),
            ("10g", Some(10 << 30)),
            ("50GiB", Some(50 << 30)),
            (" 50 GiB ", Some(50 << 30)),
            ("10GB", Some(10_000_000_000)),
            ("2T", Some(2 << 40)),
            ("2TB", Some(2_000_000_000_000)),
            ("1.5GiB", Some(3 << 29)),
            ("0.5K", Some(512)),
            ("1.25MB", Some(1_250_000)),
            ("16383PiB", None),
            ("17179869184GiB", None),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("", None),
            ("GiB", None),
            ("-1GiB", None),
            ("1.GiB", None),
            (".5GiB", None),
            ("1.2.3GiB", None),
            ("10 parsecs", None),
            ("10GiBs", None),
            ("1e9", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input).ok(), *want, "{input:?}");
        }
    }

    #[test]
    fn errors_say_what_to_write() {
        let e = parse_size("lots").unwrap_err();
        assert!(e.contains("\"lots\"") && e.contains("50GiB"), "{e}");
        let e = parse_size("99999999999999TiB").unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn format_table() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (50 << 30, "50.0 GiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(format_size(*bytes), *want, "{bytes}");
        }
    }
}
