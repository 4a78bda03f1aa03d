//! ISO-8601 timestamps without a calendar crate: UTC milliseconds to text and back.
//!
//! ```
//! use rivulet_rows::time::{iso8601, parse_iso8601};
//!
//! assert_eq!(iso8601(1_716_467_696_000), "2024-05-23T12:34:56Z");
//! assert_eq!(parse_iso8601("2024-05-23T12:34:56Z"), Ok(1_716_467_696_000));
//! assert_eq!(parse_iso8601("2024-05-23T14:34:56.250+02:00"), Ok(1_716_467_696_250));
//! ```

use std::fmt;

/// Text that is not an ISO-8601 timestamp this module understands.
///
/// ```
/// assert!(rivulet_rows::time::parse_iso8601("yesterday").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError {
    text: String,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an ISO-8601 timestamp like 2024-05-23T12:34:56Z",
            self.text
        )
    }
}

impl std::error::Error for TimeError {}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// UTC milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (with `.mmm` when the
/// milliseconds are not zero).
///
/// ```
/// assert_eq!(rivulet_rows::time::iso8601(0), "1970-01-01T00:00:00Z");
/// assert_eq!(rivulet_rows::time::iso8601(-1), "1969-12-31T23:59:59.999Z");
/// ```
pub fn iso8601(millis: i64) -> String {
    let days = millis.div_euclid(86_400_000);
    let in_day = millis.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (second, milli) = (in_day / 1000 % 60, in_day % 1000);
    if milli == 0 {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (a space may stand for the `T`) into UTC
/// milliseconds since the Unix epoch. Fractions finer than milliseconds are truncated.
///
/// ```
/// use rivulet_rows::time::parse_iso8601;
///
/// assert_eq!(parse_iso8601("1970-01-01 00:00:01.5Z"), Ok(1500));
/// assert!(parse_iso8601("2024-02-30T00:00:00Z").is_err());
/// ```
pub fn parse_iso8601(text: &str) -> Result<i64, TimeError> {
    parse(text.as_bytes()).ok_or_else(|| TimeError {
        text: text.chars().take(64).collect(),
    })
}

fn digits(bytes: &[u8], at: usize, count: usize) -> Option<i64> {
    let slice = bytes.get(at..at + count)?;
    slice.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn expect(bytes: &[u8], at: usize, what: &[u8]) -> Option<()> {
    what.contains(bytes.get(at)?).then_some(())
}

fn parse(b: &[u8]) -> Option<i64> {
    let year = digits(b, 0, 4)?;
    expect(b, 4, b"-")?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b"-")?;
    let day = digits(b, 8, 2)?;
    expect(b, 10, b"Tt ")?;
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b":")?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b":")?;
    let second = digits(b, 17, 2)?;
    let mut at = 19;
    let mut millis = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                millis = millis * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        let taken = (at - start).min(3);
        if taken == 0 {
            return None;
        }
        millis *= 10i64.pow(3 - taken as u32);
    }
    let offset_minutes = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() => {
            let hours = digits(b, at + 1, 2)?;
            expect(b, at + 3, b":")?;
            let minutes = digits(b, at + 4, 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max_day = *month_days.get(usize::try_from(month.checked_sub(1)?).ok()?)?;
    if day < 1 || day > max_day || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip_across_eras() {
        for millis in [
            0,
            1_716_467_696_000,
            951_782_400_000,
            -62_135_596_800_000,
            253_402_300_799_999,
            -1,
        ] {
            assert_eq!(parse_iso8601(&iso8601(millis)), Ok(millis), "{millis}");
        }
    }

    #[test]
    fn leap_day_is_valid_only_in_leap_years() {
        assert_eq!(parse_iso8601("2000-02-29T00:00:00Z"), Ok(951_782_400_000));
        assert!(parse_iso8601("1900-02-29T00:00:00Z").is_err());
    }

    #[test]
    fn rejects_truncated_and_trailing_text() {
        for text in [
            "",
            "2024-05-23",
            "2024-05-23T12:34:56",
            "2024-05-23T12:34:56Zjunk",
            "2024-05-23T12:34:56.Z",
            "2024-13-01T00:00:00Z",
            "2024-05-23T24:00:00Z",
            "２０２４-05-23T12:34:56Z",
        ] {
            assert!(parse_iso8601(text).is_err(), "{text:?}");
        }
    }
}
