//! The rate grammar: `"<count>/<period>"`, optionally several joined by `;`.
//!
//! One grammar serves compile time (the `#[rate_limit]` macro links this crate with
//! `default-features = false`) and run time, so a literal that compiles never fails later.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;
use std::time::Duration;

const MILLIS_PER_SECOND: u64 = 1_000;

/// The most quotas one compound rate may join. Stores keep one state per quota, and a bound
/// lets `reset` remove them all without an index of what exists.
pub const MAX_QUOTAS: usize = 8;

/// Period units in canonical order, largest first, so `Display` picks the largest unit that
/// divides a period exactly.
const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// One `count` per `period` part of a [`Rate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u64,
    period_ms: NonZeroU64,
}

impl Quota {
    /// A quota of `count` requests per `period_ms` milliseconds. A count of 0 blocks everything.
    #[must_use]
    pub const fn new(count: u64, period_ms: NonZeroU64) -> Self {
        Self { count, period_ms }
    }

    /// How many requests (or cost units) one period admits.
    #[must_use]
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// The length of one period.
    #[must_use]
    pub const fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms.get())
    }

    /// The length of one period in milliseconds (never zero).
    #[must_use]
    pub const fn period_millis(&self) -> u64 {
        self.period_ms.get()
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let period_ms = self.period_ms.get();
        if !period_ms.is_multiple_of(MILLIS_PER_SECOND) {
            // Only reachable through `Quota::new` with a sub-second period; the grammar has no
            // unit for it, so print something unambiguous rather than a lie.
            return write!(f, "{}/{}ms", self.count, period_ms);
        }
        let seconds = period_ms / MILLIS_PER_SECOND;
        let (unit, unit_seconds) = UNITS
            .into_iter()
            .find(|(_, unit_seconds)| seconds.is_multiple_of(*unit_seconds))
            .unwrap_or(('s', 1));
        let multiplier = seconds / unit_seconds;
        if multiplier == 1 {
            write!(f, "{}/{unit}", self.count)
        } else {
            write!(f, "{}/{multiplier}{unit}", self.count)
        }
    }
}

/// A parsed rate: one or more [`Quota`]s that must all allow a request (`"10/s;1000/h"`).
///
/// ```
/// use ratelimit_core::Rate;
/// let rate: Rate = "100/5m".parse().unwrap();
/// assert_eq!(rate.count(), 100);
/// assert_eq!(rate.period().as_secs(), 300);
/// assert_eq!("5/minute".parse::<Rate>().unwrap().to_string(), "5/m");
/// assert!("5/M".parse::<Rate>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    quotas: Cow<'static, [Quota]>,
}

impl Rate {
    /// Parses the rate grammar; see the crate docs for the full grammar.
    ///
    /// # Errors
    /// A [`RateParseError`] that names the problem and shows a valid rate.
    pub fn parse(input: &str) -> Result<Self, RateParseError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(RateParseError::new(input, RateParseErrorKind::Empty));
        }
        let quotas = trimmed
            .split(';')
            .map(|part| parse_quota(input, part))
            .collect::<Result<Vec<_>, _>>()?;
        if quotas.len() > MAX_QUOTAS {
            return Err(RateParseError::new(
                input,
                RateParseErrorKind::TooManyQuotas(quotas.len()),
            ));
        }
        Ok(Self {
            quotas: Cow::Owned(quotas),
        })
    }

    /// A rate from quotas known at compile time; this is what `#[rate_limit]` expands to, so
    /// the program never parses a literal at run time.
    ///
    /// # Panics
    /// When `quotas` is empty or longer than [`MAX_QUOTAS`]; in a `const` this is a compile
    /// error.
    #[must_use]
    pub const fn from_static(quotas: &'static [Quota]) -> Self {
        assert!(
            !quotas.is_empty() && quotas.len() <= MAX_QUOTAS,
            "a rate needs 1 to 8 quotas"
        );
        Self {
            quotas: Cow::Borrowed(quotas),
        }
    }

    /// A single-quota rate.
    #[must_use]
    pub fn from_quota(quota: Quota) -> Self {
        Self {
            quotas: Cow::Owned(vec![quota]),
        }
    }

    /// Every quota, in the order written.
    #[must_use]
    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// The first quota: for a simple rate, the only one.
    #[must_use]
    pub fn primary(&self) -> Quota {
        // `parse` and `from_static` never build an empty rate.
        self.quotas[0]
    }

    /// The count of the first quota.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.primary().count()
    }

    /// The period of the first quota.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.primary().period()
    }

    /// Whether the rate joins several quotas with `;`.
    #[must_use]
    pub fn is_compound(&self) -> bool {
        self.quotas.len() > 1
    }
}

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

impl From<Quota> for Rate {
    fn from(quota: Quota) -> Self {
        Self::from_quota(quota)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, quota) in self.quotas.iter().enumerate() {
            if index > 0 {
                f.write_str(";")?;
            }
            write!(f, "{quota}")?;
        }
        Ok(())
    }
}

fn parse_quota(input: &str, part: &str) -> Result<Quota, RateParseError> {
    let error = |kind| RateParseError::new(input, kind);
    let part = part.trim();
    if part.is_empty() {
        return Err(error(RateParseErrorKind::EmptyPart));
    }
    let (count_text, period_text) = part
        .split_once('/')
        .ok_or_else(|| error(RateParseErrorKind::MissingSlash))?;
    let count = parse_count(count_text.trim()).map_err(error)?;
    let period_seconds = parse_period(period_text.trim()).map_err(error)?;
    let period_ms = period_seconds
        .checked_mul(MILLIS_PER_SECOND)
        .and_then(NonZeroU64::new)
        .ok_or_else(|| error(RateParseErrorKind::PeriodOverflow))?;
    Ok(Quota::new(count, period_ms))
}

fn parse_count(text: &str) -> Result<u64, RateParseErrorKind> {
    if text.is_empty() {
        return Err(RateParseErrorKind::MissingCount);
    }
    if text.starts_with('-') {
        return Err(RateParseErrorKind::NegativeCount(text.to_owned()));
    }
    if !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(RateParseErrorKind::InvalidCount(text.to_owned()));
    }
    text.parse()
        .map_err(|_| RateParseErrorKind::CountOverflow(text.to_owned()))
}

/// Parses `[<n>]<unit>` into seconds.
fn parse_period(text: &str) -> Result<u64, RateParseErrorKind> {
    if let Some((_, garbage)) = text.split_once(char::is_whitespace) {
        return Err(RateParseErrorKind::TrailingGarbage(
            garbage.trim().to_owned(),
        ));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (multiplier_text, unit) = text.split_at(digits_end);
    let multiplier = if multiplier_text.is_empty() {
        1
    } else {
        multiplier_text
            .parse::<u64>()
            .map_err(|_| RateParseErrorKind::PeriodOverflow)?
    };
    if multiplier == 0 {
        return Err(RateParseErrorKind::ZeroMultiplier);
    }
    if unit.is_empty() {
        return Err(RateParseErrorKind::MissingUnit);
    }
    let unit_seconds = unit_seconds(unit).ok_or_else(|| {
        if unit_seconds(&unit.to_ascii_lowercase()).is_some() {
            RateParseErrorKind::UppercaseUnit(unit.to_owned())
        } else {
            RateParseErrorKind::UnknownUnit(unit.to_owned())
        }
    })?;
    multiplier
        .checked_mul(unit_seconds)
        .ok_or(RateParseErrorKind::PeriodOverflow)
}

fn unit_seconds(unit: &str) -> Option<u64> {
    Some(match unit {
        "s" | "sec" | "second" | "seconds" => 1,
        "m" | "min" | "minute" | "minutes" => 60,
        "h" | "hr" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        _ => return None,
    })
}

/// Why a rate string was rejected. `Display` names the problem and shows a valid rate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate \"{input}\": {kind}")]
pub struct RateParseError {
    input: String,
    kind: RateParseErrorKind,
}

impl RateParseError {
    fn new(input: &str, kind: RateParseErrorKind) -> Self {
        Self {
            input: input.to_owned(),
            kind,
        }
    }

    /// The text that failed to parse.
    #[must_use]
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What was wrong with it.
    #[must_use]
    pub fn kind(&self) -> &RateParseErrorKind {
        &self.kind
    }
}

/// The specific problem in a rejected rate string.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateParseErrorKind {
    #[error("the rate is empty; write \"<count>/<period>\", e.g. \"100/h\"")]
    Empty,
    #[error("a limit between `;` separators is empty; write e.g. \"10/s;1000/h\"")]
    EmptyPart,
    #[error("missing `/` between count and period; write e.g. \"100/h\"")]
    MissingSlash,
    #[error("missing count before `/`; write e.g. \"100/h\"")]
    MissingCount,
    #[error("count `{0}` is negative; use a whole number >= 0, e.g. \"100/h\"")]
    NegativeCount(String),
    #[error("count `{0}` is not a whole number; write e.g. \"100/h\"")]
    InvalidCount(String),
    #[error("count `{0}` is too large; the maximum is 18446744073709551615, e.g. \"1000000/s\"")]
    CountOverflow(String),
    #[error("missing period unit after `/`; expected one of s, m, h, d, e.g. \"100/h\"")]
    MissingUnit,
    #[error(
        "unknown period unit `{0}`; expected one of s, m, h, d (with an optional multiplier, e.g. \"10/30s\")"
    )]
    UnknownUnit(String),
    #[error(
        "period unit `{0}` must be lower case (`5/M` is not \"per second\"); expected one of s, m, h, d, e.g. \"5/m\""
    )]
    UppercaseUnit(String),
    #[error("period multiplier is 0; use at least 1, e.g. \"10/30s\"")]
    ZeroMultiplier,
    #[error("period is too long to represent in milliseconds; use a shorter one, e.g. \"1000/d\"")]
    PeriodOverflow,
    #[error("{0} limits joined with `;`; at most 8 are allowed, e.g. \"10/s;1000/h\"")]
    TooManyQuotas(usize),
    #[error("unexpected `{0}` after the period; write e.g. \"100/h\" or \"10/s;1000/h\"")]
    TrailingGarbage(String),
}
