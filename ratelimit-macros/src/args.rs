//! Parsing one `#[rate_limit(..)]` attribute: `name = value` pairs separated by commas.
//!
//! Parsing keeps every keyword token beside its value so that later errors can point at
//! either, and it recovers from a bad argument by skipping to the next comma, so one compile
//! reports every problem of the attribute. Meaning (is this rate valid, does this setting fit
//! the algorithm) is checked in `validate.rs`.

use proc_macro2::TokenTree;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprArray, Ident, Lit, LitBool, LitInt, LitStr, Token, braced, token};

use crate::errors::Errors;

pub(crate) mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(rate);
    syn::custom_keyword!(algorithm);
    syn::custom_keyword!(algorithm_config);
    syn::custom_keyword!(backend);
    syn::custom_keyword!(block);
    syn::custom_keyword!(skip_if);
    syn::custom_keyword!(group);
    syn::custom_keyword!(cost);
    syn::custom_keyword!(methods);
    syn::custom_keyword!(on_error);
    syn::custom_keyword!(shadow);
}

/// The arguments of one attribute, each with the keyword token that introduced it.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) key: Option<(kw::key, KeyArg)>,
    pub(crate) rate: Option<(kw::rate, RateArg)>,
    pub(crate) algorithm: Option<(kw::algorithm, LitStr)>,
    pub(crate) algorithm_config: Option<(kw::algorithm_config, AlgorithmConfigArg)>,
    pub(crate) backend: Option<(kw::backend, LitStr)>,
    pub(crate) block: Option<(kw::block, LitBool)>,
    pub(crate) skip_if: Option<(kw::skip_if, Expr)>,
    pub(crate) group: Option<(kw::group, LitStr)>,
    pub(crate) cost: Option<(kw::cost, CostArg)>,
    pub(crate) methods: Option<(kw::methods, MethodsArg)>,
    pub(crate) on_error: Option<(kw::on_error, LitStr)>,
    pub(crate) shadow: Option<(kw::shadow, LitBool)>,
    /// Syntax errors recovered from; validation reports them together with its own.
    pub(crate) errors: Errors,
    /// Arguments that were written but could not be parsed (so not reported missing too).
    pub(crate) broken: Vec<String>,
}

/// `key = "ip"` or `key = some_fn` / `key = |parts| ..`.
pub(crate) enum KeyArg {
    Name(LitStr),
    Function(Expr),
}

/// `rate = "100/h"` or `rate = tier_rate`.
pub(crate) enum RateArg {
    Literal(LitStr),
    Function(Expr),
}

/// `cost = 5` or `cost = upload_cost`.
pub(crate) enum CostArg {
    Literal(LitInt),
    Function(Expr),
}

/// `methods = ["POST", "PUT"]`.
pub(crate) struct MethodsArg {
    pub(crate) list: ExprArray,
    pub(crate) names: Vec<LitStr>,
}

/// `algorithm_config = { bucket_size = 200, refill_rate = 2.0 }`.
pub(crate) struct AlgorithmConfigArg {
    pub(crate) brace: token::Brace,
    pub(crate) fields: Punctuated<ConfigField, Token![,]>,
}

/// One `name = value` inside `algorithm_config`; the value is interpreted by validation.
pub(crate) struct ConfigField {
    pub(crate) name: Ident,
    pub(crate) value: Expr,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Self::default();
        while !input.is_empty() {
            let name = input.fork().parse::<Ident>().ok();
            if let Err(error) = args.parse_argument(input) {
                args.errors.push(error);
                args.broken.extend(name.map(|name| name.to_string()));
                skip_past_comma(input);
                continue;
            }
            if input.is_empty() {
                break;
            }
            if let Err(error) = input.parse::<Token![,]>() {
                args.errors.push(syn::Error::new(
                    error.span(),
                    "expected `,` between arguments, e.g. `rate = \"100/h\", key = \"ip\"`",
                ));
                skip_past_comma(input);
            }
        }
        Ok(args)
    }
}

impl Args {
    fn parse_argument(&mut self, input: ParseStream<'_>) -> syn::Result<()> {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::key) {
            parse_assignment(input, &mut self.key, key_value)
        } else if lookahead.peek(kw::rate) {
            parse_assignment(input, &mut self.rate, rate_value)
        } else if lookahead.peek(kw::algorithm) {
            parse_assignment(input, &mut self.algorithm, string_value)
        } else if lookahead.peek(kw::algorithm_config) {
            parse_assignment(input, &mut self.algorithm_config, algorithm_config_value)
        } else if lookahead.peek(kw::backend) {
            parse_assignment(input, &mut self.backend, string_value)
        } else if lookahead.peek(kw::block) {
            parse_assignment(input, &mut self.block, bool_value)
        } else if lookahead.peek(kw::skip_if) {
            parse_assignment(input, &mut self.skip_if, function_value)
        } else if lookahead.peek(kw::group) {
            parse_assignment(input, &mut self.group, string_value)
        } else if lookahead.peek(kw::cost) {
            parse_assignment(input, &mut self.cost, cost_value)
        } else if lookahead.peek(kw::methods) {
            parse_assignment(input, &mut self.methods, methods_value)
        } else if lookahead.peek(kw::on_error) {
            parse_assignment(input, &mut self.on_error, string_value)
        } else if lookahead.peek(kw::shadow) {
            parse_assignment(input, &mut self.shadow, bool_value)
        } else if input.peek(Ident) {
            let unknown: Ident = input.parse()?;
            Err(syn::Error::new(
                unknown.span(),
                format!("unknown argument `{unknown}`; {}", lookahead.error()),
            ))
        } else {
            Err(lookahead.error())
        }
    }
}

/// Parses `keyword = value` into `slot`, rejecting a second occurrence of the keyword. The value
/// is parsed (and checked) even for a duplicate, so its own errors are reported too.
fn parse_assignment<K, V>(
    input: ParseStream<'_>,
    slot: &mut Option<(K, V)>,
    parse_value: fn(ParseStream<'_>, &str) -> syn::Result<V>,
) -> syn::Result<()>
where
    K: Parse + ToTokens,
{
    let keyword: K = input.parse()?;
    let name = keyword.to_token_stream().to_string();
    if let Err(error) = input.parse::<Token![=]>() {
        return Err(syn::Error::new(
            error.span(),
            format!("expected `=` after `{name}`, e.g. `{}`", example(&name)),
        ));
    }
    let value = parse_value(input, &name)?;
    if slot.is_some() {
        return Err(syn::Error::new_spanned(
            keyword,
            format!(
                "`{name}` is given more than once; keep one (to enforce several limits, stack \
                 several `#[rate_limit(..)]` attributes)"
            ),
        ));
    }
    *slot = Some((keyword, value));
    Ok(())
}

/// A valid example of each argument, for messages.
pub(crate) fn example(name: &str) -> &'static str {
    match name {
        "key" => "key = \"ip\"",
        "rate" => "rate = \"100/h\"",
        "algorithm" => "algorithm = \"token_bucket\"",
        "algorithm_config" => "algorithm_config = { bucket_size = 200, refill_rate = 2.0 }",
        "backend" => "backend = \"redis\"",
        "block" => "block = false",
        "skip_if" => "skip_if = is_staff",
        "group" => "group = \"login\"",
        "cost" => "cost = 5",
        "methods" => "methods = [\"POST\"]",
        "on_error" => "on_error = \"deny\"",
        "shadow" => "shadow = true",
        _ => "rate = \"100/h\"",
    }
}

fn key_value(input: ParseStream<'_>, name: &str) -> syn::Result<KeyArg> {
    let expr = ungroup(input.parse()?);
    if let Some(Lit::Str(literal)) = literal(&expr) {
        return Ok(KeyArg::Name(literal.clone()));
    }
    if let Some(kind) = bare_key_kind(&expr) {
        return Err(syn::Error::new_spanned(
            expr,
            format!("write the key kind as a string: `{name} = \"{kind}\"`"),
        ));
    }
    if is_function(&expr) {
        return Ok(KeyArg::Function(expr));
    }
    Err(syn::Error::new_spanned(
        expr,
        format!(
            "`{name}` takes a key kind such as \"ip\", \"user\" or \"header:X-Api-Key\", or a \
             path or closure `fn(&Parts) -> Option<String>`, e.g. `{}`",
            example(name)
        ),
    ))
}

fn rate_value(input: ParseStream<'_>, name: &str) -> syn::Result<RateArg> {
    let expr = ungroup(input.parse()?);
    if let Some(Lit::Str(literal)) = literal(&expr) {
        return Ok(RateArg::Literal(literal.clone()));
    }
    if is_function(&expr) {
        return Ok(RateArg::Function(expr));
    }
    Err(syn::Error::new_spanned(
        expr,
        format!(
            "`{name}` takes a rate string, e.g. `{}`, or a path to a `fn(&Parts) -> Rate` for \
             per-request rates",
            example(name)
        ),
    ))
}

fn cost_value(input: ParseStream<'_>, name: &str) -> syn::Result<CostArg> {
    let expr = ungroup(input.parse()?);
    if let Some(Lit::Int(literal)) = literal(&expr) {
        return Ok(CostArg::Literal(literal.clone()));
    }
    if is_function(&expr) {
        return Ok(CostArg::Function(expr));
    }
    Err(syn::Error::new_spanned(
        expr,
        format!(
            "`{name}` takes a whole number >= 1, e.g. `{}`, or a path or closure \
             `fn(&Parts) -> u32`",
            example(name)
        ),
    ))
}

fn string_value(input: ParseStream<'_>, name: &str) -> syn::Result<LitStr> {
    let expr = ungroup(input.parse()?);
    match literal(&expr) {
        Some(Lit::Str(literal)) => Ok(literal.clone()),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`{name}` takes a string literal, e.g. `{}`", example(name)),
        )),
    }
}

fn bool_value(input: ParseStream<'_>, name: &str) -> syn::Result<LitBool> {
    let expr = ungroup(input.parse()?);
    match literal(&expr) {
        Some(Lit::Bool(literal)) => Ok(literal.clone()),
        _ => Err(syn::Error::new_spanned(
            expr,
            format!("`{name}` takes `true` or `false`, e.g. `{}`", example(name)),
        )),
    }
}

fn function_value(input: ParseStream<'_>, name: &str) -> syn::Result<Expr> {
    let expr = ungroup(input.parse()?);
    if is_function(&expr) {
        return Ok(expr);
    }
    Err(syn::Error::new_spanned(
        expr,
        format!(
            "`{name}` takes a path or closure `fn(&Parts) -> bool`, e.g. `{}` or \
             `{name} = |parts| parts.uri.path() == \"/health\"`",
            example(name)
        ),
    ))
}

fn methods_value(input: ParseStream<'_>, name: &str) -> syn::Result<MethodsArg> {
    let wrong = |tokens: &dyn ToTokens| {
        syn::Error::new_spanned(
            tokens,
            format!(
                "`{name}` takes a list of HTTP method strings, e.g. `{}`",
                example(name)
            ),
        )
    };
    let list = match ungroup(input.parse()?) {
        Expr::Array(list) => list,
        other => return Err(wrong(&other)),
    };
    let mut errors = Errors::default();
    let mut names = Vec::new();
    for element in &list.elems {
        match literal(element) {
            Some(Lit::Str(method)) => names.push(method.clone()),
            _ => errors.push(wrong(element)),
        }
    }
    errors.finish(MethodsArg { list, names })
}

fn algorithm_config_value(input: ParseStream<'_>, name: &str) -> syn::Result<AlgorithmConfigArg> {
    if !input.peek(token::Brace) {
        let value: Expr = input.parse()?;
        return Err(syn::Error::new_spanned(
            value,
            format!(
                "`{name}` takes `{{ setting = value, .. }}`, e.g. `{}`",
                example(name)
            ),
        ));
    }
    let content;
    let brace = braced!(content in input);
    let fields = content.parse_terminated(ConfigField::parse, Token![,])?;
    Ok(AlgorithmConfigArg { brace, fields })
}

impl Parse for ConfigField {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name: Ident = input.parse().map_err(|error| {
            syn::Error::new(
                error.span(),
                "expected a setting name, e.g. `bucket_size = 200` or `leak_rate = 0.5`",
            )
        })?;
        if let Err(error) = input.parse::<Token![=]>() {
            return Err(syn::Error::new(
                error.span(),
                format!("expected `=` after `{name}`, e.g. `{name} = 10`"),
            ));
        }
        let value = ungroup(input.parse()?);
        Ok(Self { name, value })
    }
}

/// The literal an expression is, if it is one.
pub(crate) fn literal(expr: &Expr) -> Option<&Lit> {
    match expr {
        Expr::Lit(literal) if literal.attrs.is_empty() => Some(&literal.lit),
        _ => None,
    }
}

/// `ip` written where `"ip"` was meant (a key kind without quotes).
fn bare_key_kind(expr: &Expr) -> Option<String> {
    let Expr::Path(path) = expr else {
        return None;
    };
    let ident = path.path.get_ident()?.to_string();
    matches!(ident.as_str(), "ip" | "user" | "user_or_ip" | "global").then_some(ident)
}

/// Whether an expression names a function: a path (`is_staff`, `Tier::rate`) or a closure.
fn is_function(expr: &Expr) -> bool {
    matches!(expr, Expr::Path(_) | Expr::Closure(_))
}

/// Removes the invisible groups that `macro_rules!` fragments arrive in, and parentheses.
fn ungroup(mut expr: Expr) -> Expr {
    loop {
        expr = match expr {
            Expr::Group(group) => *group.expr,
            Expr::Paren(paren) => *paren.expr,
            other => return other,
        };
    }
}

/// Skips the rest of a broken argument, up to and including the next top-level comma.
fn skip_past_comma(input: ParseStream<'_>) {
    // `step` fails only when its closure does, and this one never does.
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tree, next)) = rest.token_tree() {
            rest = next;
            if matches!(&tree, TokenTree::Punct(punct) if punct.as_char() == ',') {
                break;
            }
        }
        Ok(((), rest))
    });
}
