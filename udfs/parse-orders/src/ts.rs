//! Whether an order's `ts` text and its `tsMillis` agree, judged at `ts`'s own precision:
//! `"12:34:56Z"` names a whole second, so any `tsMillis` in that second agrees with it (a
//! producer stamping the clock in milliseconds and formatting whole seconds is right);
//! `"12:34:56.5Z"` names a tenth of a second, `"12:34:56.250Z"` one millisecond.
//!
//! The usual order (UTC `Z` text, in the same minute as the order before it) is checked
//! against a cached `YYYY-MM-DDTHH:MM:` prefix of that minute, so it costs a few byte
//! comparisons, not an ISO-8601 parse. Anything else (another minute, an offset, a lower-case
//! `t`, a disagreement) takes the full parse, which also words the error.

use rivulet_sdk::Error;
use rivulet_sdk::time::{iso8601, parse_iso8601};
use std::cell::Cell;

/// Length of `YYYY-MM-DDTHH:MM:`.
const PREFIX: usize = 17;

thread_local! {
    /// The last minute seen (epoch minutes) and its text prefix.
    static MINUTE: Cell<Option<(i64, [u8; PREFIX])>> = const { Cell::new(None) };
}

/// Checks that `ts` and `millis` name the same instant at `ts`'s precision.
pub fn check_agreement(ts: &str, millis: i64) -> Result<(), Error> {
    if agrees_fast(ts.as_bytes(), millis) {
        return Ok(());
    }
    let from_text = parse_iso8601(ts)?;
    let precision = precision_ms(ts.as_bytes());
    if millis.div_euclid(precision) * precision == from_text {
        Ok(())
    } else {
        Err(Error::new(format!(
            "fields `ts` ({ts}) and `tsMillis` ({millis}) disagree: at the precision of `ts` \
             ({precision} ms) `tsMillis` must be in [{from_text}, {})",
            from_text + precision
        )))
    }
}

/// Milliseconds one unit of `ts`'s last digit spans: 1000 for whole seconds, 100, 10 or 1
/// for 1, 2 or 3+ fraction digits (finer fractions are truncated to milliseconds).
fn precision_ms(ts: &[u8]) -> i64 {
    if ts.get(19) != Some(&b'.') {
        return 1000;
    }
    let digits = ts[20..].iter().take_while(|b| b.is_ascii_digit()).count();
    match digits {
        0 | 1 => 100,
        2 => 10,
        _ => 1,
    }
}

/// The cached prefix of `minute`, formatting it on a miss; `None` outside years 0000-9999.
fn minute_prefix(minute: i64) -> Option<[u8; PREFIX]> {
    if let Some((cached, prefix)) = MINUTE.get()
        && cached == minute
    {
        return Some(prefix);
    }
    let text = iso8601(minute.checked_mul(60_000)?);
    let prefix: [u8; PREFIX] = text.as_bytes().get(..PREFIX)?.try_into().ok()?;
    if text.len() != PREFIX + 3 {
        return None;
    }
    MINUTE.set(Some((minute, prefix)));
    Some(prefix)
}

/// Whether `ts`, written `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, agrees with `millis`. `false`
/// means "not shown here", never "disagrees": the caller then parses `ts` in full.
fn agrees_fast(ts: &[u8], millis: i64) -> bool {
    let Some((&b'Z', head)) = ts.split_last() else {
        return false;
    };
    if head.len() < PREFIX + 2 {
        return false;
    }
    let Some(prefix) = minute_prefix(millis.div_euclid(60_000)) else {
        return false;
    };
    if head[..PREFIX] != prefix {
        return false;
    }
    let in_minute = millis.rem_euclid(60_000);
    let (second, milli) = (in_minute / 1000, in_minute % 1000);
    let (tens, ones) = (head[PREFIX], head[PREFIX + 1]);
    if !tens.is_ascii_digit()
        || !ones.is_ascii_digit()
        || i64::from(tens - b'0') * 10 + i64::from(ones - b'0') != second
    {
        return false;
    }
    match &head[PREFIX + 2..] {
        [] => true,
        [b'.', fraction @ ..]
            if !fraction.is_empty() && fraction.iter().all(u8::is_ascii_digit) =>
        {
            let shown = fraction.len().min(3);
            let value = fraction[..shown]
                .iter()
                .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
            let unit = 10i64.pow(3 - shown as u32);
            value * unit == milli - milli % unit
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SECOND: i64 = 1_716_467_696_000; // 2024-05-23T12:34:56Z

    #[test]
    fn whole_second_text_agrees_with_every_millisecond_of_that_second() {
        for ms in [0, 1, 250, 999] {
            assert_eq!(check_agreement("2024-05-23T12:34:56Z", SECOND + ms), Ok(()));
        }
        for millis in [SECOND - 1, SECOND + 1000] {
            let err = check_agreement("2024-05-23T12:34:56Z", millis).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "fields `ts` (2024-05-23T12:34:56Z) and `tsMillis` ({millis}) disagree: at the \
                     precision of `ts` (1000 ms) `tsMillis` must be in [{SECOND}, {})",
                    SECOND + 1000
                )
            );
        }
    }

    #[test]
    fn fraction_digits_set_the_precision() {
        let cases: [(&str, i64, bool); 9] = [
            ("2024-05-23T12:34:56.5Z", 500, true),
            ("2024-05-23T12:34:56.5Z", 599, true),
            ("2024-05-23T12:34:56.5Z", 600, false),
            ("2024-05-23T12:34:56.25Z", 259, true),
            ("2024-05-23T12:34:56.25Z", 260, false),
            ("2024-05-23T12:34:56.250Z", 250, true),
            ("2024-05-23T12:34:56.250Z", 251, false),
            ("2024-05-23T12:34:56.250999Z", 250, true),
            ("2024-05-23T12:34:56.250999Z", 251, false),
        ];
        for (ts, ms, agree) in cases {
            assert_eq!(check_agreement(ts, SECOND + ms).is_ok(), agree, "{ts} {ms}");
        }
    }

    #[test]
    fn other_spellings_and_offsets_take_the_full_parse() {
        for ts in [
            "2024-05-23T14:34:56+02:00",
            "2024-05-23t12:34:56z",
            "2024-05-23 12:34:56Z",
            "2024-05-23T12:04:56-00:30",
        ] {
            assert_eq!(check_agreement(ts, SECOND + 789), Ok(()), "{ts}");
        }
        assert!(check_agreement("2024-05-23T14:34:57+02:00", SECOND + 789).is_err());
        let err = check_agreement("yesterday", SECOND)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"yesterday\" is not an ISO-8601 timestamp"),
            "{err}"
        );
    }

    #[test]
    fn the_cached_minute_never_vouches_for_another_minute_or_bad_text() {
        // Prime the cache with 12:34, then check texts that share or break its prefix.
        assert_eq!(check_agreement("2024-05-23T12:34:56Z", SECOND), Ok(()));
        assert!(check_agreement("2024-05-23T12:34:57Z", SECOND).is_err());
        assert!(check_agreement("2024-05-23T12:34:5xZ", SECOND).is_err());
        assert!(check_agreement("2024-05-23T12:34:56.Z", SECOND).is_err());
        assert!(check_agreement("2024-05-23T12:34:56ZZ", SECOND).is_err());
        assert!(check_agreement("2024-05-23T12:35:56Z", SECOND).is_err());
        // Interleaved minutes, days and years, each against its own text.
        for millis in [
            SECOND + 60_000 * 7 + 123,
            SECOND - 86_400_000,
            SECOND + 4,
            0,
            -1,
            951_782_400_000,
            253_402_300_799_999,
        ] {
            let whole = iso8601(millis - millis.rem_euclid(1000));
            assert_eq!(check_agreement(&whole, millis), Ok(()), "{whole} {millis}");
            assert_eq!(
                check_agreement(&iso8601(millis), millis),
                Ok(()),
                "{millis}"
            );
            assert!(check_agreement(&whole, millis + 1000).is_err(), "{whole}");
        }
    }
}
