//! Human durations for configuration: `"500ms"`, `"30s"`, `"5m"`, `"1h30m"`, `"7d"`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way people write them; serializes back to the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// From whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// From milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// Length in milliseconds, saturating.
    pub fn as_millis_i64(&self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {why} (write e.g. \"500ms\", \"30s\", \"5m\", \"1h30m\", \"7d\")"
)]
pub struct DurationError {
    input: String,
    why: &'static str,
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| DurationError {
            input: s.to_string(),
            why,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        let mut total_ms: u128 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let n: u128 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = rest[..unit_len].trim();
            rest = &rest[unit_len..];
            let ms_per = match unit {
                "ms" => 1,
                "s" | "sec" => 1_000,
                "m" | "min" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "w" => 7 * 86_400_000,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            total_ms = total_ms
                .checked_add(n.checked_mul(ms_per).ok_or_else(|| err("too large"))?)
                .ok_or_else(|| err("too large"))?;
        }
        let ms = u64::try_from(total_ms).map_err(|_| err("too large"))?;
        Ok(Self(Duration::from_millis(ms)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return write!(f, "0s");
        }
        for (unit, per) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= per {
                write!(f, "{}{unit}", ms / per)?;
                ms %= per;
            }
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let cases = [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("7d", 604_800_000),
            ("2w", 1_209_600_000),
        ];
        for (s, ms) in cases {
            let d: HumanDuration = s.parse().expect(s);
            assert_eq!(d.0, Duration::from_millis(ms), "{s}");
            let back: HumanDuration = d.to_string().parse().expect("round trip");
            assert_eq!(back, d);
        }
        assert_eq!(HumanDuration::from_secs(90).to_string(), "1m30s");
    }

    #[test]
    fn refuses_garbage() {
        for s in ["", "7", "d", "7x", "1h-", "99999999999999999999999d"] {
            assert!(s.parse::<HumanDuration>().is_err(), "{s}");
        }
    }
}
