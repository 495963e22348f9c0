//! How a metered (`upto`) route learns what a request used: the route's configured usage source
//! and what it charges when the upstream's report is missing or unreadable. The amounts are
//! decided in the payment lifecycle (`metered_charge`, `response_charge`); this is the
//! configuration it reads.

use serde::{Deserialize, Serialize};

/// How a metered route turns what the upstream reports into an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    /// The upstream reports units used; each costs `unit_amount` atomic units.
    PerUnit { unit_amount: u128 },
    /// The upstream reports the amount itself, in atomic units.
    Absolute,
}

/// What a metered route charges when the upstream's report is missing or unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageFallback {
    /// The buyer pays the maximum they authorized (the seller is never short-changed).
    #[default]
    Maximum,
    /// The buyer pays nothing.
    Nothing,
}

impl UsageFallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Maximum => "maximum",
            Self::Nothing => "nothing",
        }
    }
}

impl Metering {
    /// How a metered route charges, for buyers reading `/.well-known/x402`: the usage source,
    /// the price of a unit (atomic, and in the asset's units with `decimals`) and the fallback.
    /// The maximum is the option's `amount`. `Settlement-Overrides` from the upstream always wins.
    pub fn describe(&self, decimals: u8) -> serde_json::Value {
        let unit = |atomic: u128| {
            serde_json::json!({
                "unitAmount": atomic.to_string(),
                "unitPrice": super::format_units(atomic, decimals),
            })
        };
        let mut described = match (&self.body, &self.header) {
            (Some(body), _) => {
                let mut d = unit(body.unit_amount);
                d["source"] = "usage_json".into();
                d["path"] = body.path.as_str().into();
                d
            }
            (None, Some(header)) => match header.meter {
                Meter::PerUnit { unit_amount } => {
                    let mut d = unit(unit_amount);
                    d["source"] = "usage_header".into();
                    d["header"] = header.name.as_str().into();
                    d
                }
                Meter::Absolute => serde_json::json!({
                    "source": "amount_header",
                    "header": header.name.as_str(),
                }),
            },
            (None, None) => serde_json::json!({"source": "settlement_overrides"}),
        };
        described["fallback"] = self.fallback.as_str().into();
        described
    }
}

/// A response header the upstream reports usage in, and how its value becomes an amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageHeader {
    pub name: http::HeaderName,
    pub meter: Meter,
}

/// A metered route's terms. `Settlement-Overrides` is always read first; `header` or `body` is
/// the route's own usage source, if it names one (never both: the configuration refuses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metering {
    pub header: Option<UsageHeader>,
    /// Units used, read from the response body (a JSON document or the last server-sent event
    /// naming the path); the gateway then carries the exchange itself to read the body before
    /// settling.
    pub body: Option<UsageJson>,
    pub fallback: UsageFallback,
}

/// Units used, at `path` in the upstream's JSON answer, each costing `unit_amount` atomic units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageJson {
    pub path: UsagePath,
    pub unit_amount: u128,
}

/// A dotted path into a JSON document (`usage.total_tokens`); a segment of digits also indexes an
/// array (`choices.0.usage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePath {
    text: String,
    segments: Vec<String>,
}

/// Why a `usage_json` path is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsagePathError {
    #[error("the path is empty")]
    Empty,
    #[error("`{0}` has an empty segment: write keys separated by single dots")]
    EmptySegment(String),
}

/// Why the usage could not be read from a JSON answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageReadError {
    #[error("the answer has no `{0}`")]
    Missing(String),
    #[error("`{path}` is {found}, not a non-negative integer")]
    NotAnInteger { path: String, found: String },
}

impl UsagePath {
    pub fn parse(text: &str) -> Result<Self, UsagePathError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(UsagePathError::Empty);
        }
        let segments: Vec<String> = text.split('.').map(str::to_string).collect();
        if segments.iter().any(String::is_empty) {
            return Err(UsagePathError::EmptySegment(text.to_string()));
        }
        Ok(Self {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path, if the document has one there.
    pub fn find<'a>(&self, document: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        self.segments
            .iter()
            .try_fold(document, |value, segment| match value {
                serde_json::Value::Object(map) => map.get(segment),
                serde_json::Value::Array(items) => {
                    segment.parse::<usize>().ok().and_then(|i| items.get(i))
                }
                _ => None,
            })
    }

    /// The units used at this path: a non-negative integer, as a JSON number (`42`, `42.0`) or a
    /// decimal string (`"42"`). Fractions, negatives and other types are refused rather than
    /// rounded, since a guess could charge the buyer for what they did not use.
    pub fn read(&self, document: &serde_json::Value) -> Result<u128, UsageReadError> {
        let value = self
            .find(document)
            .ok_or_else(|| UsageReadError::Missing(self.text.clone()))?;
        let refused = |found: String| UsageReadError::NotAnInteger {
            path: self.text.clone(),
            found,
        };
        match value {
            serde_json::Value::Number(n) => {
                if let Some(n) = n.as_u64() {
                    return Ok(u128::from(n));
                }
                // `12.0` is an integer written as a float by some serialisers; JSON numbers
                // beyond u64 are read through their exact text.
                let text = n.to_string();
                let whole = text.strip_suffix(".0").unwrap_or(&text);
                if !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()) {
                    return whole.parse().map_err(|_| refused(text.clone()));
                }
                Err(refused(text))
            }
            serde_json::Value::String(s) => {
                let digits = s.trim();
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    return digits
                        .parse()
                        .map_err(|_| refused(format!("`{}` (out of range)", s.escape_debug())));
                }
                Err(refused(format!("the string `{}`", s.escape_debug())))
            }
            serde_json::Value::Null => Err(refused("null".to_string())),
            serde_json::Value::Bool(b) => Err(refused(b.to_string())),
            serde_json::Value::Array(_) => Err(refused("an array".to_string())),
            serde_json::Value::Object(_) => Err(refused("an object".to_string())),
        }
    }
}

impl std::fmt::Display for UsagePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> UsagePath {
        UsagePath::parse(text).expect(text)
    }

    #[test]
    fn paths_are_dotted_keys() {
        assert_eq!(path(" usage.total_tokens ").as_str(), "usage.total_tokens");
        assert_eq!(UsagePath::parse(""), Err(UsagePathError::Empty));
        assert_eq!(UsagePath::parse("  "), Err(UsagePathError::Empty));
        for bad in ["usage.", ".usage", "usage..total"] {
            assert!(
                matches!(UsagePath::parse(bad), Err(UsagePathError::EmptySegment(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn reads_openai_and_anthropic_usage() {
        let openai = json!({"id": "x", "usage": {"prompt_tokens": 5, "completion_tokens": 37, "total_tokens": 42}});
        assert_eq!(path("usage.total_tokens").read(&openai), Ok(42));
        let anthropic =
            json!({"type": "message", "usage": {"input_tokens": 3, "output_tokens": 17}});
        assert_eq!(path("usage.output_tokens").read(&anthropic), Ok(17));
        let indexed = json!({"choices": [{"usage": {"n": 7}}]});
        assert_eq!(path("choices.0.usage.n").read(&indexed), Ok(7));
    }

    #[test]
    fn integers_as_numbers_floats_or_decimal_strings() {
        let read = |v: serde_json::Value| path("n").read(&json!({ "n": v }));
        assert_eq!(read(json!(0)), Ok(0));
        assert_eq!(read(json!(12.0)), Ok(12));
        assert_eq!(read(json!("1234")), Ok(1234));
        assert_eq!(read(json!(" 8 ")), Ok(8));
        assert_eq!(read(json!(u64::MAX)), Ok(u128::from(u64::MAX)));
    }

    #[test]
    fn anything_else_is_refused_and_named() {
        let read = |v: serde_json::Value| path("usage.n").read(&json!({"usage": { "n": v }}));
        for (value, named) in [
            (json!(-1), "-1"),
            (json!(1.5), "1.5"),
            (json!("1.5"), "1.5"),
            (json!("-3"), "-3"),
            (json!(""), "string"),
            (
                json!("99999999999999999999999999999999999999999"),
                "out of range",
            ),
            (json!(null), "null"),
            (json!(true), "true"),
            (json!([1]), "array"),
            (json!({"a": 1}), "object"),
        ] {
            match read(value.clone()) {
                Err(e @ UsageReadError::NotAnInteger { .. }) => {
                    let message = e.to_string();
                    assert!(message.contains("usage.n"), "{message}");
                    assert!(message.contains(named), "{value}: {message}");
                }
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_path_is_missing() {
        let p = path("usage.total_tokens");
        for document in [
            json!({}),
            json!({"usage": {}}),
            json!({"usage": 3}),
            json!([1, 2]),
            json!("text"),
        ] {
            assert_eq!(
                p.read(&document),
                Err(UsageReadError::Missing("usage.total_tokens".into())),
                "{document}"
            );
        }
        assert_eq!(
            path("a.5").read(&json!({"a": [1]})),
            Err(UsageReadError::Missing("a.5".into()))
        );
    }
}
