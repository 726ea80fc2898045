//! Money: integer micro-dollars inside, exact decimal strings at the edges.
//!
//! One US dollar is 1,000,000 micro-dollars. Parsing is exact: a string with
//! more than six decimal places is refused rather than rounded, so a limit a
//! user wrote is the limit Caracal enforces. No floating point touches money.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-dollars per dollar.
pub const MICROS_PER_DOLLAR: i64 = 1_000_000;

/// An amount of money in integer micro-dollars (USD). May be negative only
/// where arithmetic produces it (e.g. an overspent remainder); parsed user
/// input is always non-negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

/// Why a money string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty; write a decimal number of US dollars such as \"10.00\"")]
    Empty,
    #[error("amount {0:?} is negative; amounts must be zero or more")]
    Negative(String),
    #[error(
        "amount {0:?} is not a plain decimal number; write digits with an optional '.' and up to 6 decimal places, such as \"12.50\""
    )]
    Malformed(String),
    #[error("amount {0:?} has more than 6 decimal places; the smallest unit is 0.000001 USD")]
    TooPrecise(String),
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl Micros {
    pub const ZERO: Micros = Micros(0);

    pub fn from_dollars(dollars: i64) -> Option<Micros> {
        dollars.checked_mul(MICROS_PER_DOLLAR).map(Micros)
    }

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn checked_add(self, other: Micros) -> Option<Micros> {
        self.0.checked_add(other.0).map(Micros)
    }

    pub fn saturating_sub(self, other: Micros) -> Micros {
        Micros(self.0.saturating_sub(other.0))
    }

    /// Parse a decimal dollar string such as `"100"`, `"0.50"` or `"0.000001"`.
    pub fn parse_dollars(input: &str) -> Result<Micros, MoneyError> {
        if input.is_empty() {
            return Err(MoneyError::Empty);
        }
        if input.starts_with('-') {
            return Err(MoneyError::Negative(input.to_owned()));
        }
        let (whole, frac) = match input.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (input, None),
        };
        let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits_only(whole) || frac.is_some_and(|f| !digits_only(f)) {
            return Err(MoneyError::Malformed(input.to_owned()));
        }
        let frac = frac.unwrap_or("");
        if frac.len() > 6 {
            return Err(MoneyError::TooPrecise(input.to_owned()));
        }
        let overflow = || MoneyError::Overflow(input.to_owned());
        let whole: i64 = whole.parse().map_err(|_| overflow())?;
        let mut frac_micros: i64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_micros += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
        }
        whole
            .checked_mul(MICROS_PER_DOLLAR)
            .and_then(|w| w.checked_add(frac_micros))
            .map(Micros)
            .ok_or_else(overflow)
    }
}

/// Formats as a dollar string with six decimal places trimmed to at least two
/// (`"10.00"`, `"0.000123"`, `"-1.50"`); the alternate form (`{:#}`) keeps
/// all six (`"10.000000"`), so that a column of amounts lines up.
impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_DOLLAR as u64;
        let frac = format!("{:06}", abs % MICROS_PER_DOLLAR as u64);
        let trimmed = frac.trim_end_matches('0');
        let frac = if f.alternate() {
            &frac
        } else if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        write!(f, "{sign}{whole}.{frac}")
    }
}

impl FromStr for Micros {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Micros::parse_dollars(s)
    }
}

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Micros::parse_dollars(&s).map_err(serde::de::Error::custom)
    }
}

/// The schema pattern for a money string, shared by every CRD field that
/// holds one. Kept in step with [`Micros::parse_dollars`] by a test.
pub const MONEY_PATTERN: &str = r"^[0-9]+(\.[0-9]{1,6})?$";

impl schemars::JsonSchema for Micros {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Money".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": MONEY_PATTERN,
            "description": "US dollars as a decimal string with at most 6 decimal places, e.g. \"100.00\""
        })
    }
    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_amounts() {
        let cases = [
            ("0", 0),
            ("0.000001", 1),
            ("1", 1_000_000),
            ("100.00", 100_000_000),
            ("12.5", 12_500_000),
            ("0.123456", 123_456),
            ("9223372036854.775807", i64::MAX),
        ];
        for (input, micros) in cases {
            assert_eq!(Micros::parse_dollars(input), Ok(Micros(micros)), "{input}");
        }
    }

    #[test]
    fn refuses_inexact_or_malformed_amounts() {
        let cases: [(&str, MoneyError); 11] = [
            ("", MoneyError::Empty),
            ("-1", MoneyError::Negative("-1".into())),
            ("1.0000001", MoneyError::TooPrecise("1.0000001".into())),
            ("1e3", MoneyError::Malformed("1e3".into())),
            ("1.", MoneyError::Malformed("1.".into())),
            (".5", MoneyError::Malformed(".5".into())),
            ("+1", MoneyError::Malformed("+1".into())),
            (" 1", MoneyError::Malformed(" 1".into())),
            ("1,00", MoneyError::Malformed("1,00".into())),
            ("NaN", MoneyError::Malformed("NaN".into())),
            (
                "9223372036854.775808",
                MoneyError::Overflow("9223372036854.775808".into()),
            ),
        ];
        for (input, err) in cases {
            assert_eq!(Micros::parse_dollars(input), Err(err), "{input}");
        }
    }

    #[test]
    fn error_messages_say_what_to_write() {
        let msg = Micros::parse_dollars("1.0000001").unwrap_err().to_string();
        assert!(msg.contains("more than 6 decimal places"), "{msg}");
    }

    #[test]
    fn displays_round_trip() {
        for micros in [0, 1, 10, 1_000_000, 12_500_000, 123_456_789, -1_500_000] {
            let shown = Micros(micros).to_string();
            if micros >= 0 {
                assert_eq!(Micros::parse_dollars(&shown), Ok(Micros(micros)), "{shown}");
            }
        }
        assert_eq!(Micros(10_000_000).to_string(), "10.00");
        assert_eq!(Micros(123).to_string(), "0.000123");
        assert_eq!(Micros(-1_500_000).to_string(), "-1.50");
        // The alternate form keeps every decimal place, for columns.
        let fixed = [
            (0, "0.000000"),
            (10, "0.000010"),
            (9, "0.000009"),
            (12_500_000, "12.500000"),
            (-1_500_000, "-1.500000"),
        ];
        for (micros, want) in fixed {
            assert_eq!(format!("{:#}", Micros(micros)), want);
            assert_eq!(
                Micros::parse_dollars(want.trim_start_matches('-'))
                    .unwrap()
                    .get(),
                micros.abs()
            );
        }
    }
}
