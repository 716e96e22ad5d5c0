//! Every case of the rate grammar, accepted and rejected, with the message users see.

use ratelimit_core::{Rate, RateParseErrorKind};

/// `(count, period seconds)` of each quota.
type Quotas = &'static [(u64, u64)];

/// `(input, quotas, canonical display)`.
const ACCEPTED: &[(&str, Quotas, &str)] = &[
    ("10/s", &[(10, 1)], "10/s"),
    ("5/m", &[(5, 60)], "5/m"),
    ("100/h", &[(100, 3_600)], "100/h"),
    ("1000/d", &[(1_000, 86_400)], "1000/d"),
    ("10/30s", &[(10, 30)], "10/30s"),
    ("100/5m", &[(100, 300)], "100/5m"),
    ("3/15min", &[(3, 900)], "3/15m"),
    ("1/sec", &[(1, 1)], "1/s"),
    ("1/second", &[(1, 1)], "1/s"),
    ("2/seconds", &[(2, 1)], "2/s"),
    ("5/min", &[(5, 60)], "5/m"),
    ("5/minute", &[(5, 60)], "5/m"),
    ("5/minutes", &[(5, 60)], "5/m"),
    ("7/hr", &[(7, 3_600)], "7/h"),
    ("7/hour", &[(7, 3_600)], "7/h"),
    ("7/hours", &[(7, 3_600)], "7/h"),
    ("9/day", &[(9, 86_400)], "9/d"),
    ("9/days", &[(9, 86_400)], "9/d"),
    ("0/m", &[(0, 60)], "0/m"),
    ("10/60s", &[(10, 60)], "10/m"),
    ("10/120m", &[(10, 7_200)], "10/2h"),
    ("  100/h  ", &[(100, 3_600)], "100/h"),
    ("100 / h", &[(100, 3_600)], "100/h"),
    ("10/s;1000/h", &[(10, 1), (1_000, 3_600)], "10/s;1000/h"),
    (" 10/s ; 1000/h ", &[(10, 1), (1_000, 3_600)], "10/s;1000/h"),
    (
        "18446744073709551615/d",
        &[(u64::MAX, 86_400)],
        "18446744073709551615/d",
    ),
];

#[test]
fn accepted_rates_parse_to_their_quotas_and_print_canonically() {
    for (input, quotas, canonical) in ACCEPTED {
        let rate = Rate::parse(input).unwrap_or_else(|error| panic!("{input:?}: {error}"));
        let parsed: Vec<(u64, u64)> = rate
            .quotas()
            .iter()
            .map(|quota| (quota.count(), quota.period().as_secs()))
            .collect();
        assert_eq!(parsed, *quotas, "{input:?}");
        assert_eq!(rate.to_string(), *canonical, "{input:?}");
        assert_eq!(rate.count(), quotas[0].0);
        assert_eq!(rate.period().as_secs(), quotas[0].1);
        assert_eq!(input.parse::<Rate>().as_ref(), Ok(&rate), "FromStr agrees");
        assert_eq!(
            Rate::parse(canonical).as_ref(),
            Ok(&rate),
            "display round-trips"
        );
    }
}

/// `(input, expected kind, a fragment the message must contain)`.
fn rejected() -> Vec<(&'static str, RateParseErrorKind, &'static str)> {
    use RateParseErrorKind as Kind;
    vec![
        ("", Kind::Empty, "e.g. \"100/h\""),
        ("   ", Kind::Empty, "the rate is empty"),
        ("100", Kind::MissingSlash, "missing `/`"),
        ("100h", Kind::MissingSlash, "missing `/`"),
        ("/h", Kind::MissingCount, "missing count"),
        ("-5/m", Kind::NegativeCount("-5".into()), "negative"),
        (
            "1.5/m",
            Kind::InvalidCount("1.5".into()),
            "not a whole number",
        ),
        (
            "ten/m",
            Kind::InvalidCount("ten".into()),
            "not a whole number",
        ),
        (
            "+5/m",
            Kind::InvalidCount("+5".into()),
            "not a whole number",
        ),
        (
            "18446744073709551616/m",
            Kind::CountOverflow("18446744073709551616".into()),
            "too large",
        ),
        ("10/", Kind::MissingUnit, "missing period unit"),
        ("10/30", Kind::MissingUnit, "missing period unit"),
        ("10/0s", Kind::ZeroMultiplier, "multiplier is 0"),
        (
            "100/x",
            Kind::UnknownUnit("x".into()),
            "expected one of s, m, h, d (with an optional multiplier, e.g. \"10/30s\")",
        ),
        (
            "100/week",
            Kind::UnknownUnit("week".into()),
            "unknown period unit `week`",
        ),
        (
            "100/ms",
            Kind::UnknownUnit("ms".into()),
            "unknown period unit",
        ),
        ("5/M", Kind::UppercaseUnit("M".into()), "must be lower case"),
        (
            "5/Min",
            Kind::UppercaseUnit("Min".into()),
            "must be lower case",
        ),
        ("5/H", Kind::UppercaseUnit("H".into()), "not \"per second\""),
        (
            "10/s extra",
            Kind::TrailingGarbage("extra".into()),
            "unexpected `extra`",
        ),
        (
            "10/s/m",
            Kind::UnknownUnit("s/m".into()),
            "unknown period unit",
        ),
        ("10/s;", Kind::EmptyPart, "is empty"),
        (";10/s", Kind::EmptyPart, "is empty"),
        ("10/s;;1/h", Kind::EmptyPart, "is empty"),
        ("10/s;abc", Kind::MissingSlash, "missing `/`"),
        ("1/99999999999999999999d", Kind::PeriodOverflow, "too long"),
        ("1/213503982334601d", Kind::PeriodOverflow, "too long"),
        (
            "1/s;1/s;1/s;1/s;1/s;1/s;1/s;1/s;1/s",
            Kind::TooManyQuotas(9),
            "at most 8",
        ),
    ]
}

#[test]
fn rejected_rates_name_the_problem_and_show_a_valid_rate() {
    for (input, kind, fragment) in rejected() {
        let error = match Rate::parse(input) {
            Ok(rate) => panic!("{input:?} parsed as {rate}"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), &kind, "{input:?}");
        assert_eq!(error.input(), input);
        let message = error.to_string();
        assert!(message.contains(fragment), "{input:?}: {message}");
        assert!(
            message.contains(&format!("\"{input}\"")),
            "message quotes the input: {message}"
        );
        assert!(
            message.contains("e.g."),
            "message shows a valid example: {message}"
        );
    }
}

#[test]
fn static_rates_equal_parsed_ones() {
    use std::num::NonZeroU64;

    use ratelimit_core::Quota;

    const QUOTAS: &[Quota] = &[
        Quota::new(10, NonZeroU64::MIN.saturating_add(999)),
        Quota::new(1_000, NonZeroU64::MIN.saturating_add(3_599_999)),
    ];
    const RATE: Rate = Rate::from_static(QUOTAS);
    assert_eq!(
        RATE,
        Rate::parse("10/s;1000/h").unwrap_or_else(|error| panic!("{error}"))
    );
    assert!(RATE.is_compound());
}
