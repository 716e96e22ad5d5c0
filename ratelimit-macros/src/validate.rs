//! What the parsed arguments mean, checked at compile time: the rate through core's own
//! grammar (`Rate::parse`), the settings through core's `Limit::validate`, so a limit that
//! compiles is one the runtime accepts. Every error is spanned on the offending token and says
//! how to fix it; all of them are reported at once.

use std::num::NonZeroU64;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use ratelimit_core::{Algorithm, Limit, LimitError, Quota, Rate};
use syn::{Expr, Lit, LitInt, LitStr, Signature, UnOp};

use crate::args::{AlgorithmConfigArg, Args, ConfigField, CostArg, KeyArg, MethodsArg, RateArg};
use crate::errors::Errors;

/// One attribute, checked: what the expansion writes as a runtime `LimitSpec`.
pub(crate) struct LimitSpec {
    pub(crate) key: Key,
    pub(crate) rate: RateSpec,
    pub(crate) algorithm: Algorithm,
    pub(crate) config: Config,
    pub(crate) backend: Option<String>,
    pub(crate) block: bool,
    pub(crate) skip_if: Option<Expr>,
    /// `None` for the default, the handler's path.
    pub(crate) group: Option<String>,
    pub(crate) cost: Cost,
    /// Empty for every method.
    pub(crate) methods: Vec<&'static str>,
    pub(crate) on_error: Option<OnError>,
    pub(crate) shadow: bool,
}

/// Where the bucket key comes from.
pub(crate) enum Key {
    Ip,
    User,
    UserOrIp,
    Global,
    /// Lower-cased header name.
    Header(String),
    Query(String),
    Path(String),
    Custom(Expr),
}

/// The rate: parsed at compile time, or chosen per request.
pub(crate) enum RateSpec {
    Fixed {
        /// As written, for the link-time registry.
        text: String,
        rate: Rate,
    },
    PerRequest(Expr),
}

/// `algorithm_config = { .. }`, each setting checked against the algorithm.
#[derive(Clone, Copy, Default)]
pub(crate) struct Config {
    pub(crate) bucket_size: Option<u64>,
    pub(crate) refill_rate: Option<f64>,
    pub(crate) initial_tokens: Option<u64>,
    pub(crate) capacity: Option<u64>,
    pub(crate) leak_rate: Option<f64>,
}

/// A request's cost.
pub(crate) enum Cost {
    Fixed(u64),
    PerRequest(Expr),
}

/// What to do when every backend fails.
#[derive(Clone, Copy)]
pub(crate) enum OnError {
    Allow,
    Deny,
}

/// The standard methods `methods = [..]` accepts.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

const KEY_KINDS: &str = "\"ip\", \"user\", \"user_or_ip\", \"global\", \"header:<Name>\", \
                         \"query:<name>\", \"path:<name>\", or a path or closure \
                         `fn(&Parts) -> Option<String>`";

/// Checks the handler the attribute is on: an `async fn` without `self`.
pub(crate) fn handler(signature: &Signature) -> syn::Result<()> {
    let mut errors = Errors::default();
    let name = &signature.ident;
    if signature.asyncness.is_none() {
        errors.spanned(
            signature.fn_token,
            format!(
                "`#[rate_limit]` needs an `async fn` (axum handlers are async); write \
                 `async fn {name}(..)`"
            ),
        );
    }
    if let Some(receiver) = signature.receiver() {
        errors.spanned(
            receiver,
            "`#[rate_limit]` handlers cannot take `self`: axum calls a handler without a \
             receiver; remove `self` (an associated function without `self` works) and pass \
             shared data with `State<..>`",
        );
    }
    if let Some(unsafety) = signature.unsafety {
        errors.spanned(
            unsafety,
            "`#[rate_limit]` handlers cannot be `unsafe`: axum cannot call them; remove `unsafe`",
        );
    }
    if let Some(constness) = signature.constness {
        errors.spanned(constness, "a handler cannot be `const`; remove `const`");
    }
    if let Some(abi) = &signature.abi {
        errors.spanned(
            abi,
            "`#[rate_limit]` handlers use the Rust ABI; remove the `extern`",
        );
    }
    errors.finish(())
}

/// Checks one attribute's arguments. `attribute` is the attribute's tokens, where an error
/// about the attribute as a whole (a missing `rate`) points; empty for the call site.
pub(crate) fn limit(args: Args, attribute: &TokenStream) -> syn::Result<LimitSpec> {
    let Args {
        key,
        rate,
        algorithm,
        algorithm_config,
        backend,
        block,
        skip_if,
        group,
        cost,
        methods,
        on_error,
        shadow,
        errors: parse_errors,
        broken,
    } = args;
    let mut errors = Errors::default();
    errors.extend(parse_errors);

    // An argument that fails records its error and falls back to its default, so the rest are
    // still checked; `finish` then returns the errors instead of the spec.
    let key = match key {
        None => Key::Ip,
        Some((_, KeyArg::Name(literal))) => errors.ok(key_name(&literal)).unwrap_or(Key::Ip),
        Some((_, KeyArg::Function(function))) => Key::Custom(function),
    };
    let algorithm = match &algorithm {
        None => Some(Algorithm::FixedWindow),
        Some((_, literal)) => errors.ok(algorithm_name(literal)),
    };
    let rate_span = match &rate {
        Some((_, RateArg::Literal(literal))) => Some(literal.span()),
        _ => None,
    };
    let rate = match rate {
        None if broken.iter().any(|name| name == "rate") => None,
        None => {
            errors.spanned(
                attribute,
                "missing `rate`; add e.g. `rate = \"100/h\"` (or `rate = tier_rate`, a \
                 `fn(&Parts) -> Rate`, for per-request rates)",
            );
            None
        }
        Some((_, RateArg::Literal(literal))) => errors.ok(fixed_rate(&literal)),
        Some((_, RateArg::Function(function))) => Some(RateSpec::PerRequest(function)),
    };
    let config_arg = algorithm_config.as_ref().map(|(_, arg)| arg);
    let config = match config_arg {
        None => Some(Config::default()),
        Some(arg) => errors.ok(settings(arg, algorithm, rate.as_ref())),
    };
    if let (Some(config), Some(algorithm), Some(rate)) = (config, algorithm, &rate) {
        let target = ErrorTarget {
            config: config_arg,
            rate: rate_span,
        };
        errors.ok(core_validate(algorithm, config, rate, &target));
    }
    let config = config.unwrap_or_default();
    let backend = backend.and_then(|(_, literal)| errors.ok(non_empty(&literal, "backend")));
    let group = group.and_then(|(_, literal)| errors.ok(non_empty(&literal, "group")));
    let cost = match cost {
        None => Cost::Fixed(1),
        Some((_, CostArg::Literal(literal))) => {
            errors.ok(fixed_cost(&literal)).unwrap_or(Cost::Fixed(1))
        }
        Some((_, CostArg::Function(function))) => Cost::PerRequest(function),
    };
    let methods = match &methods {
        None => Vec::new(),
        Some((_, methods)) => errors.ok(method_names(methods)).unwrap_or_default(),
    };
    let on_error = on_error.and_then(|(_, literal)| errors.ok(on_error_name(&literal)));

    let (Some(rate), Some(algorithm)) = (rate, algorithm) else {
        // Both recorded their error above.
        return Err(errors.into_error());
    };
    errors.finish(LimitSpec {
        key,
        rate,
        algorithm,
        config,
        backend,
        block: block.is_none_or(|(_, literal)| literal.value),
        skip_if: skip_if.map(|(_, function)| function),
        group,
        cost,
        methods,
        on_error,
        shadow: shadow.is_some_and(|(_, literal)| literal.value),
    })
}

fn key_name(literal: &LitStr) -> syn::Result<Key> {
    let value = literal.value();
    let error = |message: String| Err(syn::Error::new(literal.span(), message));
    match value.as_str() {
        "ip" => return Ok(Key::Ip),
        "user" => return Ok(Key::User),
        "user_or_ip" => return Ok(Key::UserOrIp),
        "global" => return Ok(Key::Global),
        _ => {}
    }
    let Some((kind, name)) = value.split_once(':') else {
        let lower = value.to_ascii_lowercase();
        if matches!(lower.as_str(), "ip" | "user" | "user_or_ip" | "global") {
            return error(format!("key kinds are lower case: write \"{lower}\""));
        }
        return error(format!(
            "unknown key \"{value}\"; expected one of {KEY_KINDS}"
        ));
    };
    match kind {
        "header" if name.is_empty() => error(
            "empty header name in \"header:\"; name the header, e.g. \"header:X-Api-Key\"".into(),
        ),
        "header" if !name.bytes().all(is_header_name_byte) => error(format!(
            "`{name}` is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only); \
             write e.g. \"header:X-Api-Key\""
        )),
        "header" => Ok(Key::Header(name.to_ascii_lowercase())),
        "query" | "path" if name.is_empty() => error(format!(
            "empty parameter name in \"{kind}:\"; name it, e.g. \"{kind}:{}\"",
            if kind == "query" { "api_key" } else { "id" }
        )),
        "query" => Ok(Key::Query(name.to_owned())),
        "path" => Ok(Key::Path(name.to_owned())),
        _ => error(format!(
            "unknown key kind `{kind}:` in \"{value}\"; expected one of {KEY_KINDS}"
        )),
    }
}

/// A `token` character of RFC 9110, the only bytes a header name may hold.
fn is_header_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn algorithm_name(literal: &LitStr) -> syn::Result<Algorithm> {
    // Core's message lists every algorithm.
    literal
        .value()
        .parse()
        .map_err(|error| syn::Error::new(literal.span(), error))
}

fn fixed_rate(literal: &LitStr) -> syn::Result<RateSpec> {
    let text = literal.value();
    match Rate::parse(&text) {
        Ok(rate) => Ok(RateSpec::Fixed { text, rate }),
        Err(error) => Err(syn::Error::new(literal.span(), error)),
    }
}

fn fixed_cost(literal: &LitInt) -> syn::Result<Cost> {
    match literal.base10_parse::<u64>() {
        Ok(0) => Err(syn::Error::new(
            literal.span(),
            "`cost` must be at least 1; to not count some requests use `skip_if` or `methods`",
        )),
        Ok(cost) => Ok(Cost::Fixed(cost)),
        Err(_) => Err(syn::Error::new(
            literal.span(),
            "`cost` must be a whole number from 1 to 18446744073709551615, e.g. `cost = 5`",
        )),
    }
}

fn non_empty(literal: &LitStr, name: &str) -> syn::Result<String> {
    let value = literal.value();
    if value.trim().is_empty() {
        let fix = match name {
            "backend" => {
                "name a configured backend, e.g. `backend = \"redis\"`, or remove `backend` for \
                 the registry's default"
            }
            _ => "name it, e.g. `group = \"login\"`, or remove `group` for the handler's own",
        };
        return Err(syn::Error::new(
            literal.span(),
            format!("`{name}` is empty; {fix}"),
        ));
    }
    Ok(value)
}

fn on_error_name(literal: &LitStr) -> syn::Result<OnError> {
    match literal.value().as_str() {
        "allow" => Ok(OnError::Allow),
        "deny" => Ok(OnError::Deny),
        other => Err(syn::Error::new(
            literal.span(),
            format!("unknown `on_error` policy \"{other}\"; expected \"allow\" or \"deny\""),
        )),
    }
}

fn method_names(methods: &MethodsArg) -> syn::Result<Vec<&'static str>> {
    let mut errors = Errors::default();
    if methods.names.is_empty() {
        errors.spanned(
            &methods.list,
            "`methods = []` counts no request; list the methods to count, e.g. \
             `methods = [\"POST\"]`, or remove `methods` to count every method",
        );
    }
    let mut names = Vec::new();
    for literal in &methods.names {
        let value = literal.value();
        let upper = value.to_ascii_uppercase();
        match METHODS.iter().find(|method| **method == value) {
            Some(method) if names.contains(method) => errors.spanned(
                literal,
                format!("\"{method}\" is listed twice in `methods`; remove one"),
            ),
            Some(method) => names.push(*method),
            None if METHODS.contains(&upper.as_str()) => errors.spanned(
                literal,
                format!("HTTP methods are upper case: write \"{upper}\""),
            ),
            None => errors.spanned(
                literal,
                format!(
                    "unknown HTTP method \"{value}\"; expected one of {}",
                    METHODS.join(", ")
                ),
            ),
        }
    }
    errors.finish(names)
}

/// Which algorithm a setting of `algorithm_config` belongs to.
fn setting_owner(name: &str) -> Option<Algorithm> {
    match name {
        "bucket_size" | "refill_rate" | "initial_tokens" => Some(Algorithm::TokenBucket),
        "capacity" | "leak_rate" => Some(Algorithm::LeakyBucket),
        _ => None,
    }
}

/// Checks `algorithm_config` against the algorithm (`None` when it was itself invalid) and,
/// for a literal rate, through core's `Limit::validate`.
fn settings(
    arg: &AlgorithmConfigArg,
    algorithm: Option<Algorithm>,
    rate: Option<&RateSpec>,
) -> syn::Result<Config> {
    let mut errors = Errors::default();
    let mut config = Config::default();
    let mut seen: Vec<String> = Vec::new();
    for field in &arg.fields {
        let name = field.name.to_string();
        let Some(owner) = setting_owner(&name) else {
            errors.spanned(
                &field.name,
                format!(
                    "unknown setting `{name}`; token_bucket takes bucket_size, refill_rate and \
                     initial_tokens, leaky_bucket takes capacity and leak_rate"
                ),
            );
            continue;
        };
        if seen.contains(&name) {
            errors.spanned(
                &field.name,
                format!("`{name}` is set twice in `algorithm_config`; keep one"),
            );
            continue;
        }
        seen.push(name.clone());
        if let Some(algorithm) = algorithm.filter(|algorithm| *algorithm != owner) {
            let default = if algorithm == Algorithm::FixedWindow {
                " (the default)"
            } else {
                ""
            };
            errors.spanned(
                &field.name,
                format!(
                    "`{name}` is a setting of {owner}, but this limit uses {algorithm}{default}; \
                     set `algorithm = \"{owner}\"` or remove `{name}`"
                ),
            );
            continue;
        }
        match name.as_str() {
            "bucket_size" => config.bucket_size = errors.ok(whole(field, 1)),
            "initial_tokens" => config.initial_tokens = errors.ok(whole(field, 0)),
            "capacity" => config.capacity = errors.ok(whole(field, 1)),
            "refill_rate" => config.refill_rate = errors.ok(per_second(field)),
            _ => config.leak_rate = errors.ok(per_second(field)),
        }
    }
    errors.ok(initial_tokens_fit(arg, config, rate));
    errors.finish(config)
}

/// `initial_tokens` no larger than the bucket: `bucket_size`, or else a literal rate's count.
fn initial_tokens_fit(
    arg: &AlgorithmConfigArg,
    config: Config,
    rate: Option<&RateSpec>,
) -> syn::Result<()> {
    let implied = match rate {
        Some(RateSpec::Fixed { rate, .. }) if !rate.is_compound() => {
            Some((rate.count(), ", the rate's count"))
        }
        _ => None,
    };
    let bucket = config.bucket_size.map(|size| (size, "")).or(implied);
    let field = arg
        .fields
        .iter()
        .find(|field| field.name == "initial_tokens");
    match (config.initial_tokens, bucket, field) {
        (Some(initial_tokens), Some((bucket_size, source)), Some(field))
            if initial_tokens > bucket_size =>
        {
            Err(syn::Error::new_spanned(
                &field.value,
                format!(
                    "`initial_tokens` ({initial_tokens}) is above the bucket size \
                     ({bucket_size}{source}); use at most {bucket_size}, or set a larger \
                     `bucket_size`"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Where an error of core's `Limit::validate` can point when it names no setting.
struct ErrorTarget<'a> {
    config: Option<&'a AlgorithmConfigArg>,
    rate: Option<Span>,
}

/// A second for the stand-in rate of `core_validate`.
const ONE_SECOND_MS: NonZeroU64 = NonZeroU64::MIN.saturating_add(999);

/// Runs core's `Limit::validate`, the run-time authority, on what the attribute declares, so
/// compile time accepts exactly what run time does (decimals of a flow, exact bucket levels,
/// settings on a compound rate).
fn core_validate(
    algorithm: Algorithm,
    config: Config,
    rate: &RateSpec,
    target: &ErrorTarget<'_>,
) -> syn::Result<()> {
    let rate = match rate {
        RateSpec::Fixed { rate, .. } => rate.clone(),
        // A per-request rate is known only at run time, which validates it there; check the
        // settings alone with a stand-in whose count cannot trip a check.
        RateSpec::PerRequest(_) if target.config.is_none() => return Ok(()),
        RateSpec::PerRequest(_) => {
            let count = config.bucket_size.or(config.capacity).unwrap_or(1);
            Rate::from_quota(Quota::new(count, ONE_SECOND_MS))
        }
    };
    let mut limit = Limit::new(rate, algorithm);
    if let Some(bucket_size) = config.bucket_size {
        limit = limit.bucket_size(bucket_size);
    }
    if let Some(refill_rate) = config.refill_rate {
        limit = limit.refill_rate(refill_rate);
    }
    if let Some(initial_tokens) = config.initial_tokens {
        limit = limit.initial_tokens(initial_tokens);
    }
    if let Some(capacity) = config.capacity {
        limit = limit.capacity(capacity);
    }
    if let Some(leak_rate) = config.leak_rate {
        limit = limit.leak_rate(leak_rate);
    }
    let Err(error) = limit.validate() else {
        return Ok(());
    };
    let field = |name: &str| {
        target
            .config
            .and_then(|arg| arg.fields.iter().find(|field| field.name == name))
    };
    let setting = match &error {
        LimitError::SettingForOtherAlgorithm { field: name, .. }
        | LimitError::SettingOnCompoundRate { field: name } => {
            field(name).map(|field| field.name.to_token_stream())
        }
        LimitError::InvalidPerSecond { field: name, .. } | LimitError::Zero { field: name } => {
            field(name).map(|field| field.value.to_token_stream())
        }
        LimitError::NeverRefills { field: name } => {
            field(name).map(|field| field.name.to_token_stream())
        }
        LimitError::InitialTokensAboveBucketSize { .. } => {
            field("initial_tokens").map(|field| field.value.to_token_stream())
        }
        _ => None,
    };
    Err(match (setting, target.config, target.rate) {
        (Some(tokens), _, _) => syn::Error::new_spanned(tokens, error),
        (None, Some(arg), _) => syn::Error::new(arg.brace.span.join(), error),
        (None, None, Some(rate)) => syn::Error::new(rate, error),
        (None, None, None) => syn::Error::new(Span::call_site(), error),
    })
}

/// A whole-number setting, at least `min`.
fn whole(field: &ConfigField, min: u64) -> syn::Result<u64> {
    let name = &field.name;
    let wrong = || {
        syn::Error::new_spanned(
            &field.value,
            format!(
                "`{name}` must be a whole number >= {min}, e.g. `{name} = {}`",
                min.max(10)
            ),
        )
    };
    match number(&field.value) {
        Some(Number::Whole(value)) if value >= min => Ok(value),
        Some(Number::Whole(_)) => Err(syn::Error::new_spanned(
            &field.value,
            format!(
                "`{name}` must be at least {min}, e.g. `{name} = {}`",
                min.max(10)
            ),
        )),
        _ => Err(wrong()),
    }
}

/// A per-second flow setting: finite and above 0.
fn per_second(field: &ConfigField) -> syn::Result<f64> {
    let name = &field.name;
    let value = match number(&field.value) {
        #[expect(clippy::cast_precision_loss, reason = "flows are checked exact below")]
        Some(Number::Whole(value)) => value as f64,
        Some(Number::Real(value)) => value,
        None => f64::NAN,
    };
    if value.is_finite() && value > 0.0 {
        return Ok(value);
    }
    Err(syn::Error::new_spanned(
        &field.value,
        format!(
            "`{name}` must be a finite number above 0 (per second), e.g. `{name} = 2.0` or \
             `{name} = 0.5`"
        ),
    ))
}

enum Number {
    Whole(u64),
    Real(f64),
}

/// The number an `algorithm_config` value stands for: a literal, a negated literal, or one of
/// `f64::NAN` / `f64::INFINITY` (which validation then rejects by name).
fn number(expr: &Expr) -> Option<Number> {
    match expr {
        Expr::Lit(literal) => match &literal.lit {
            Lit::Int(int) => int.base10_parse().ok().map(Number::Whole),
            Lit::Float(float) => float.base10_parse().ok().map(Number::Real),
            _ => None,
        },
        Expr::Unary(unary) if matches!(unary.op, UnOp::Neg(_)) => match number(&unary.expr)? {
            #[expect(clippy::cast_precision_loss, reason = "only its sign matters")]
            Number::Whole(value) => Some(Number::Real(-(value as f64))),
            Number::Real(value) => Some(Number::Real(-value)),
        },
        Expr::Path(path) => match path.path.segments.last()?.ident.to_string().as_str() {
            "NAN" => Some(Number::Real(f64::NAN)),
            "INFINITY" => Some(Number::Real(f64::INFINITY)),
            "NEG_INFINITY" => Some(Number::Real(f64::NEG_INFINITY)),
            _ => None,
        },
        _ => None,
    }
}
