//! `INTERVAL '15' SECOND` (and MINUTE, HOUR, DAY, MILLISECOND) as a duration.

use super::{Pos, SqlError};
use sqlparser::ast::{DateTimeField, Expr, Spanned, Value};
use std::time::Duration;

/// The duration `expr` writes, if it is an interval literal with one unit.
pub fn duration(expr: &Expr) -> Result<Duration, SqlError> {
    let at = Pos::of(expr.span());
    let Expr::Interval(interval) = expr else {
        return Err(SqlError::invalid(
            at,
            format!("expected an interval like INTERVAL '15' SECOND, found `{expr}`"),
        ));
    };
    if interval.last_field.is_some() || interval.leading_precision.is_some() {
        return Err(SqlError::unsupported(at, format!("the interval `{expr}`")));
    }
    let text = match interval.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::Number(s, _) => s.trim().to_owned(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    let amount: u64 = text.parse().map_err(|_| {
        SqlError::invalid(
            at,
            format!("the interval `{expr}` needs a whole number, like INTERVAL '15' SECOND"),
        )
    })?;
    let unit_ms: u64 = match &interval.leading_field {
        Some(DateTimeField::Millisecond | DateTimeField::Milliseconds) => 1,
        Some(DateTimeField::Second | DateTimeField::Seconds) => 1000,
        Some(DateTimeField::Minute | DateTimeField::Minutes) => 60_000,
        Some(DateTimeField::Hour | DateTimeField::Hours) => 3_600_000,
        Some(DateTimeField::Day | DateTimeField::Days) => 86_400_000,
        Some(other) => {
            return Err(SqlError::unsupported_because(
                at,
                format!("the interval unit {other}"),
                "use MILLISECOND, SECOND, MINUTE, HOUR or DAY",
            ));
        }
        None => {
            return Err(SqlError::invalid(
                at,
                format!("the interval `{expr}` needs a unit, like INTERVAL '15' SECOND"),
            ));
        }
    };
    amount
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| SqlError::invalid(at, format!("the interval `{expr}` is too long")))
}
