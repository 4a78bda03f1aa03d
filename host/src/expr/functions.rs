//! The built-in scalar functions and `LIKE`, one row at a time.

use super::{Builtin, Value};

/// `builtin(args)` for one row. NULL in gives NULL out (COALESCE excepted).
pub fn call(builtin: Builtin, args: &[&Value]) -> Result<Value, String> {
    if builtin == Builtin::Coalesce {
        return Ok(args
            .iter()
            .find(|v| !v.is_null())
            .map_or(Value::Null, |v| (*v).clone()));
    }
    if args.iter().any(|v| v.is_null()) {
        return Ok(Value::Null);
    }
    let text = |i: usize, name: &str| -> Result<&str, String> {
        match args.get(i) {
            Some(Value::Text(s)) => Ok(s),
            Some(other) => Err(format!("{name} needs text, found {}", other.kind())),
            None => Err(format!("{name} is missing an argument")),
        }
    };
    let int = |i: usize, name: &str| -> Result<Option<i64>, String> {
        match args.get(i) {
            Some(Value::Int(n)) => Ok(Some(*n)),
            Some(other) => Err(format!("{name} needs an integer, found {}", other.kind())),
            None => Ok(None),
        }
    };
    Ok(match builtin {
        Builtin::Upper => Value::Text(text(0, "UPPER")?.to_uppercase()),
        Builtin::Lower => Value::Text(text(0, "LOWER")?.to_lowercase()),
        Builtin::CharLength => {
            Value::Int(i64::try_from(text(0, "CHAR_LENGTH")?.chars().count()).unwrap_or(i64::MAX))
        }
        Builtin::Concat => Value::Text(args.iter().map(|v| v.to_string()).collect()),
        Builtin::Trim(leading, trailing) => {
            let s = text(0, "TRIM")?;
            let what: Vec<char> = match args.get(1) {
                Some(_) => text(1, "TRIM")?.chars().collect(),
                None => vec![' '],
            };
            let mut out = s;
            if leading {
                out = out.trim_start_matches(what.as_slice());
            }
            if trailing {
                out = out.trim_end_matches(what.as_slice());
            }
            Value::Text(out.to_owned())
        }
        Builtin::Substring => {
            let s = text(0, "SUBSTRING")?;
            let start = int(1, "SUBSTRING")?.unwrap_or(1);
            let len = int(2, "SUBSTRING")?;
            Value::Text(substring(s, start, len)?)
        }
        Builtin::Abs => match args.first() {
            Some(Value::Int(i)) => Value::Int(
                i.checked_abs()
                    .ok_or_else(|| format!("integer overflow in ABS({i})"))?,
            ),
            Some(Value::Float(x)) => Value::Float(x.abs()),
            Some(other) => return Err(format!("ABS needs a number, found {}", other.kind())),
            None => Value::Null,
        },
        Builtin::Coalesce => Value::Null,
    })
}

/// SQL's SUBSTRING: characters from `start` (1 is the first; SQL counts positions before
/// the first too, so `SUBSTRING('abc' FROM 0 FOR 2)` is `a`), `len` of them (or the rest).
fn substring(s: &str, start: i64, len: Option<i64>) -> Result<String, String> {
    if let Some(len) = len
        && len < 0
    {
        return Err(format!("SUBSTRING: negative length {len}"));
    }
    let end = len.map(|len| start.saturating_add(len));
    let from = start.max(1);
    Ok(s.chars()
        .enumerate()
        .map(|(i, c)| (i as i64 + 1, c))
        .filter(|&(p, _)| p >= from && end.is_none_or(|e| p < e))
        .map(|(_, c)| c)
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    Any,
    One,
    Char(char),
}

/// SQL's LIKE: `%` any run of characters, `_` one character; `escape` makes the next
/// character literal.
pub fn like(text: &str, pattern: &str, escape: Option<char>) -> Result<bool, String> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            c if Some(c) == escape => match chars.next() {
                Some(next) => Token::Char(next),
                None => {
                    return Err(format!(
                        "LIKE pattern '{pattern}' ends with its escape character"
                    ));
                }
            },
            '%' => Token::Any,
            '_' => Token::One,
            c => Token::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // Greedy matching with one backtrack point (the last `%`).
    let (mut t, mut p) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            Some(Token::Any) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return Ok(false),
            },
        }
    }
    Ok(tokens[p..].iter().all(|t| *t == Token::Any))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn like_matches_percent_underscore_and_escapes() {
        let cases = [
            ("SHIPPED", "SHIP%", true),
            ("SHIPPED", "%PP%", true),
            ("SHIPPED", "S_IPPED", true),
            ("SHIPPED", "S_PPED", false),
            ("", "%", true),
            ("abc", "a%c%", true),
            ("abc", "a%b", false),
            ("50%", "50!%", true),
            ("500", "50!%", false),
            ("aXbXc", "%X%X%", true),
        ];
        for (text, pattern, expected) in cases {
            assert_eq!(
                like(text, pattern, Some('!')).unwrap(),
                expected,
                "{text} LIKE {pattern}"
            );
        }
    }

    #[test]
    fn substring_counts_characters_from_one() {
        assert_eq!(substring("héllo", 2, Some(3)).unwrap(), "éll");
        assert_eq!(substring("abc", 0, Some(2)).unwrap(), "a");
        assert_eq!(substring("abc", 2, None).unwrap(), "bc");
        assert_eq!(substring("abc", 5, None).unwrap(), "");
        assert!(substring("abc", 1, Some(-1)).is_err());
    }
}
