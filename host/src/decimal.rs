//! Exact decimals for `DECIMAL(p, s)`: a value is an `i128` count of `10^-s` (its scale
//! lives in the plan, not in the value), so sums never drift. In rows, and across the WIT
//! boundary, a decimal is its text (`"12.30"`, always with `s` fraction digits); the Avro
//! `decimal` logical type is the unscaled value's big-endian two's complement bytes.
//! Parsing and rounding (HALF_UP, as Flink casts) use `bigdecimal`.

use bigdecimal::num_bigint::BigInt;
use bigdecimal::{BigDecimal, RoundingMode, ToPrimitive};
use std::str::FromStr;

/// `10^exp`, if it fits.
fn pow10(exp: u32) -> Option<i128> {
    10i128.checked_pow(exp)
}

/// The text of a number (`"0.1"`, `"-12"`, `"1.5e3"`) at `scale`, rounded half up.
pub fn parse(text: &str, scale: u32) -> Result<i128, String> {
    let value = BigDecimal::from_str(text.trim())
        .map_err(|_| format!("`{text}` is not a decimal number"))?;
    let (unscaled, _) = value
        .with_scale_round(i64::from(scale), RoundingMode::HalfUp)
        .into_bigint_and_scale();
    unscaled
        .to_i128()
        .ok_or_else(|| format!("`{text}` is too large for a DECIMAL"))
}

/// A float at `scale`, read as its shortest decimal text (`0.1` is exactly 0.1, not
/// 0.1000000000000000055...: the JSON that carried it said 0.1).
pub fn from_f64(value: f64, scale: u32) -> Result<i128, String> {
    if !value.is_finite() {
        return Err(format!("{value} is not a decimal number"));
    }
    parse(&value.to_string(), scale)
}

/// A whole number at `scale`.
pub fn from_i64(value: i64, scale: u32) -> Result<i128, String> {
    pow10(scale)
        .and_then(|factor| i128::from(value).checked_mul(factor))
        .ok_or_else(|| format!("{value} is too large for a DECIMAL with scale {scale}"))
}

/// `unscaled` (at `from`) at scale `to`, rounded half up; `None` if it does not fit.
pub fn rescale(unscaled: i128, from: u32, to: u32) -> Option<i128> {
    if to >= from {
        unscaled.checked_mul(pow10(to - from)?)
    } else {
        Some(div_half_up(unscaled, pow10(from - to)?))
    }
}

/// `numerator / denominator`, rounded half away from zero (`denominator` > 0).
pub fn div_half_up(numerator: i128, denominator: i128) -> i128 {
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    if remainder.unsigned_abs() * 2 >= denominator.unsigned_abs() {
        quotient + numerator.signum()
    } else {
        quotient
    }
}

/// How many digits `unscaled` has (0 has one).
pub fn digits(unscaled: i128) -> u32 {
    unscaled
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |d| d + 1)
}

/// Whether `unscaled` fits `DECIMAL(precision, _)`.
pub fn fits(unscaled: i128, precision: u32) -> bool {
    digits(unscaled) <= precision
}

/// The text of `unscaled` at `scale`, with exactly `scale` fraction digits.
pub fn to_text(unscaled: i128, scale: u32) -> String {
    BigDecimal::new(BigInt::from(unscaled), i64::from(scale)).to_plain_string()
}

/// The Avro `decimal` bytes of `unscaled`: big-endian two's complement, as few bytes as
/// hold it.
pub fn to_avro_bytes(unscaled: i128) -> Vec<u8> {
    let bytes = unscaled.to_be_bytes();
    let sign = if unscaled < 0 { 0xff } else { 0x00 };
    // Drop leading sign bytes while the next byte keeps the sign bit.
    let mut start = 0;
    while start < bytes.len() - 1
        && bytes[start] == sign
        && (bytes[start + 1] & 0x80) == (sign & 0x80)
    {
        start += 1;
    }
    bytes[start..].to_vec()
}

/// The unscaled value of Avro `decimal` bytes, if it fits an `i128`.
pub fn from_avro_bytes(bytes: &[u8]) -> Option<i128> {
    if bytes.is_empty() {
        return Some(0);
    }
    if bytes.len() > 16 {
        let sign = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
        let (extra, rest) = bytes.split_at(bytes.len() - 16);
        if extra.iter().any(|b| *b != sign) || (rest[0] & 0x80) != (sign & 0x80) {
            return None;
        }
        return from_avro_bytes(rest);
    }
    let sign = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
    let mut full = [sign; 16];
    full[16 - bytes.len()..].copy_from_slice(bytes);
    Some(i128::from_be_bytes(full))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_prints_at_the_planned_scale_rounding_half_up() {
        assert_eq!(parse("12.3", 2), Ok(1230));
        assert_eq!(parse("-0.125", 2), Ok(-13));
        assert_eq!(parse("0.124", 2), Ok(12));
        assert_eq!(parse("1.5e3", 0), Ok(1500));
        assert_eq!(from_f64(0.1, 2), Ok(10));
        assert_eq!(from_i64(-7, 3), Ok(-7000));
        assert_eq!(to_text(1230, 2), "12.30");
        assert_eq!(to_text(-5, 3), "-0.005");
        assert_eq!(to_text(42, 0), "42");
        assert_eq!(parse("abc", 2), Err("`abc` is not a decimal number".into()));
        assert_eq!(rescale(1230, 2, 6), Some(12_300_000));
        assert_eq!(rescale(1235, 2, 1), Some(124));
        assert_eq!(rescale(-1235, 2, 1), Some(-124));
        assert_eq!(div_half_up(7, 2), 4);
        assert_eq!(div_half_up(-7, 2), -4);
        assert_eq!(div_half_up(5, 3), 2);
        assert!(fits(99_999, 5) && !fits(100_000, 5) && fits(0, 1));
    }

    #[test]
    fn avro_bytes_are_minimal_twos_complement_and_round_trip() {
        assert_eq!(to_avro_bytes(0), [0]);
        assert_eq!(to_avro_bytes(127), [0x7f]);
        assert_eq!(to_avro_bytes(128), [0x00, 0x80]);
        assert_eq!(to_avro_bytes(-1), [0xff]);
        assert_eq!(to_avro_bytes(-129), [0xff, 0x7f]);
        assert_eq!(to_avro_bytes(1230), [0x04, 0xce]);
        for value in [0, 1, -1, 127, 128, -128, -129, 1230, i128::MAX, i128::MIN] {
            assert_eq!(from_avro_bytes(&to_avro_bytes(value)), Some(value));
        }
        let mut long = vec![0u8; 4];
        long.extend_from_slice(&to_avro_bytes(i128::MAX));
        assert_eq!(from_avro_bytes(&long), Some(i128::MAX));
        assert_eq!(from_avro_bytes(&[1; 17]), None);
    }
}
