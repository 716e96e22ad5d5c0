//! The expansion: every `#[rate_limit]` on a handler becomes one guard extractor in front of
//! the original extractors, plus the handler's limits registered as static data.
//!
//! ```text
//! #[rate_limit(rate = "100/h")]
//! pub async fn api(State(db): State<Db>) -> impl IntoResponse { body }
//! ```
//! becomes
//! ```text
//! pub async fn api(
//!     __ratelimit_guard: Guard<{ handler_id(module_path!(), "api", LINE, COLUMN) }, true>,
//!     __ratelimit_arg_0: State<Db>,
//! ) -> Response {
//!     async fn __ratelimit_inner(State(db): State<Db>) -> impl IntoResponse { body }
//!     static __RATELIMIT_LIMITS: [LimitSpec; 1] = [LimitSpec { .. }];
//!     inventory::submit! { HandlerSpec { id, handler, limits: &__RATELIMIT_LIMITS } }
//!     inventory::submit! { RegisteredLimit { .. } }   // one per attribute
//!     __ratelimit_guard.finish(__ratelimit_inner(__ratelimit_arg_0).await)
//! }
//! ```
//! The guard runs before every other extractor, so a rejected request never has its body read.

use proc_macro2::{Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, GenericParam, Ident, ItemFn, Meta, PatType};

use crate::args::Args;
use crate::errors::Errors;
use crate::validate::{self, Cost, Key, LimitSpec, OnError, RateSpec};

/// Where the (first) attribute is written; part of the handler's id, so two handlers of one
/// name in one module (in different `impl` blocks) get different guards.
#[derive(Clone, Copy)]
pub(crate) struct Position {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// Expands `#[rate_limit(args)]` on `item`. On any error the item is still emitted (without
/// its `#[rate_limit]` attributes) beside every error, so the rest of the crate compiles and
/// only the real problems are reported.
pub(crate) fn rate_limit(args: TokenStream, item: TokenStream, position: Position) -> TokenStream {
    let mut function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                Span::call_site(),
                "`#[rate_limit]` goes on an `async fn` handler, e.g. \
                 `#[rate_limit(rate = \"100/h\")] async fn api() -> &'static str { \"ok\" }`",
            );
            return with_error(item, &error);
        }
    };
    let stacked = take_stacked(&mut function.attrs);
    match check(args, &stacked, &function) {
        Ok(limits) => generate(&function, &limits, position),
        Err(error) => with_error(function.into_token_stream(), &error),
    }
}

fn with_error(mut tokens: TokenStream, error: &syn::Error) -> TokenStream {
    tokens.extend(error.to_compile_error());
    tokens
}

/// Removes the `#[rate_limit(..)]` attributes below the one being expanded: this expansion
/// handles them all, top first.
fn take_stacked(attrs: &mut Vec<Attribute>) -> Vec<Attribute> {
    let (stacked, others) = std::mem::take(attrs).into_iter().partition(|attr| {
        attr.path()
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "rate_limit")
    });
    *attrs = others;
    stacked
}

/// Parses and validates the handler and every attribute, reporting all errors at once.
fn check(
    args: TokenStream,
    stacked: &[Attribute],
    function: &ItemFn,
) -> syn::Result<Vec<LimitSpec>> {
    let mut errors = Errors::default();
    errors.ok(validate::handler(&function.sig));
    let mut attributes = vec![(Ok(args), TokenStream::new())];
    attributes.extend(
        stacked
            .iter()
            .map(|attr| (attribute_args(attr), attr.to_token_stream())),
    );
    let mut limits = Vec::new();
    for (args, attribute) in attributes {
        let limit = args
            .and_then(syn::parse2::<Args>)
            .and_then(|args| validate::limit(args, &attribute));
        limits.extend(errors.ok(limit));
    }
    errors.finish(limits)
}

fn attribute_args(attr: &Attribute) -> syn::Result<TokenStream> {
    match &attr.meta {
        Meta::List(list) => Ok(list.tokens.clone()),
        Meta::Path(_) => Ok(TokenStream::new()),
        Meta::NameValue(name_value) => Err(syn::Error::new_spanned(
            name_value,
            "write the arguments in parentheses, e.g. `#[rate_limit(rate = \"100/h\")]`",
        )),
    }
}

fn generate(function: &ItemFn, limits: &[LimitSpec], position: Position) -> TokenStream {
    let ItemFn {
        attrs, vis, sig, ..
    } = function;
    let asyncness = &sig.asyncness;
    let fn_token = &sig.fn_token;
    let name = &sig.ident;
    let generics = &sig.generics;
    let where_clause = &sig.generics.where_clause;
    let inputs = &sig.inputs;

    let handler_name = name.unraw().to_string();
    let line = Literal::u32_unsuffixed(u32::try_from(position.line).unwrap_or(u32::MAX));
    let column = Literal::u32_unsuffixed(u32::try_from(position.column).unwrap_or(u32::MAX));
    let handler_id = quote! {
        ::ratelimit_axum::__private::handler_id(
            ::core::module_path!(), #handler_name, #line, #column
        )
    };
    let handler_path = quote! { ::core::concat!(::core::module_path!(), "::", #handler_name) };

    let params: Vec<&PatType> = inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(param) => Some(param),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let arg_names: Vec<Ident> = (0..params.len())
        .map(|index| format_ident!("__ratelimit_arg_{}", index))
        .collect();
    let outer_params = params.iter().zip(&arg_names).map(|(param, arg_name)| {
        let ty = &param.ty;
        quote! { #arg_name: #ty }
    });
    let turbofish = turbofish(generics);
    // With no argument after the guard, the request's parts are dropped right after it: no
    // extractor or handler could read the `RateLimitStatus` extension, so it is not inserted.
    let expose_status = !params.is_empty();

    let inner = inner_fn(function);
    let (sibling, nested, call) = (&inner.sibling, &inner.nested, &inner.call);

    let limit_specs = limits
        .iter()
        .enumerate()
        .map(|(index, limit)| limit_spec(limit, index, &handler_path));
    let limit_count = limits.len();
    let registered = limits
        .iter()
        .map(|limit| registered_limit(limit, &handler_path));

    quote! {
        #sibling
        #(#attrs)*
        // The guard is one argument more than the user wrote.
        #[allow(clippy::too_many_arguments)]
        #vis #asyncness #fn_token #name #generics (
            __ratelimit_guard: ::ratelimit_axum::__private::Guard<{ #handler_id }, #expose_status>,
            #(#outer_params,)*
        ) -> ::ratelimit_axum::__private::Response #where_clause {
            #nested
            // A named static rather than `&[..]` in place: a `Limit` caches its resolved
            // policies in a cell, and only a static may hold one for the whole program.
            static __RATELIMIT_LIMITS: [::ratelimit_axum::__private::LimitSpec; #limit_count] =
                [#(#limit_specs),*];
            ::ratelimit_axum::__private::inventory::submit! {
                ::ratelimit_axum::__private::HandlerSpec {
                    id: #handler_id,
                    handler: #handler_path,
                    limits: &__RATELIMIT_LIMITS,
                }
            }
            #(#registered)*
            __ratelimit_guard.finish(#call #turbofish(#(#arg_names),*).await)
        }
    }
}

/// The original fn under a hidden name, with the user's body.
struct InnerFn {
    /// Emitted beside the outer fn (an associated handler that names `Self`)...
    sibling: TokenStream,
    /// ...or inside it (every other handler).
    nested: TokenStream,
    /// The path the outer fn calls.
    call: TokenStream,
}

fn inner_fn(function: &ItemFn) -> InnerFn {
    let ItemFn {
        attrs, sig, block, ..
    } = function;
    let name = &sig.ident;
    let generics = &sig.generics;
    let where_clause = &sig.generics.where_clause;
    let inputs = &sig.inputs;
    let output = &sig.output;
    // Lint levels the user set on the handler must still reach its body.
    let lint_attrs = attrs.iter().filter(|attr| {
        ["allow", "warn", "deny", "forbid"]
            .iter()
            .any(|level| attr.path().is_ident(level))
    });
    // `async fn` are the macro's own tokens, so clippy sees a generated fn and does not ask
    // for `async` to go (the body is called directly now, not passed as a handler).
    let signature = |inner: &Ident| {
        quote! {
            #(#lint_attrs)*
            async fn #inner #generics (#inputs) #output #where_clause #block
        }
    };
    // A nested fn cannot name `Self`: an associated handler that does gets a sibling instead.
    if mentions_self(sig.to_token_stream()) || mentions_self(block.to_token_stream()) {
        let inner = format_ident!("__ratelimit_inner_{}", name.unraw());
        let sibling = signature(&inner);
        InnerFn {
            sibling: quote! { #[doc(hidden)] #sibling },
            nested: TokenStream::new(),
            call: quote! { Self::#inner },
        }
    } else {
        let inner = format_ident!("__ratelimit_inner");
        InnerFn {
            sibling: TokenStream::new(),
            nested: signature(&inner),
            call: quote! { #inner },
        }
    }
}

/// `::<T, N>` for the handler's type and const parameters (lifetimes are inferred).
fn turbofish(generics: &syn::Generics) -> TokenStream {
    let params: Vec<&Ident> = generics
        .params
        .iter()
        .filter_map(|param| match param {
            GenericParam::Type(param) => Some(&param.ident),
            GenericParam::Const(param) => Some(&param.ident),
            GenericParam::Lifetime(_) => None,
        })
        .collect();
    if params.is_empty() {
        TokenStream::new()
    } else {
        quote! { ::<#(#params),*> }
    }
}

/// Whether `Self` appears anywhere in `tokens`.
fn mentions_self(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == "Self",
        TokenTree::Group(group) => mentions_self(group.stream()),
        TokenTree::Punct(_) | TokenTree::Literal(_) => false,
    })
}

/// One runtime `LimitSpec`, const-constructed. Each function the user named is bound to its
/// expected `fn` pointer type, so a wrong signature is a plain "expected fn pointer" error on
/// the user's token.
fn limit_spec(limit: &LimitSpec, index: usize, handler_path: &TokenStream) -> TokenStream {
    let key = match &limit.key {
        Key::Ip => quote! { ::ratelimit_axum::__private::KeySource::Ip },
        Key::User => quote! { ::ratelimit_axum::__private::KeySource::User },
        Key::UserOrIp => quote! { ::ratelimit_axum::__private::KeySource::UserOrIp },
        Key::Global => quote! { ::ratelimit_axum::__private::KeySource::Global },
        Key::Header(name) => quote! { ::ratelimit_axum::__private::KeySource::Header(#name) },
        Key::Query(name) => quote! { ::ratelimit_axum::__private::KeySource::Query(#name) },
        Key::Path(name) => quote! { ::ratelimit_axum::__private::KeySource::Path(#name) },
        Key::Custom(function) => {
            let name = custom_key_name(function, index, handler_path);
            quote_spanned! {at_user(function)=>
                ::ratelimit_axum::__private::KeySource::Custom {
                    name: #name,
                    key: {
                        let key: fn(
                            &::ratelimit_axum::__private::Parts,
                        ) -> ::core::option::Option<::std::string::String> = #function;
                        key
                    },
                }
            }
        }
    };
    let algorithm = algorithm(limit.algorithm);
    let rate = match &limit.rate {
        RateSpec::Fixed { rate, .. } => {
            let quotas = rate.quotas().iter().map(|quota| {
                let count = Literal::u64_unsuffixed(quota.count());
                let period_ms = Literal::u64_unsuffixed(quota.period_millis());
                quote! { ::ratelimit_axum::__private::quota(#count, #period_ms) }
            });
            let setters = setters(limit);
            quote! {
                ::ratelimit_axum::__private::RateSource::Fixed(
                    ::ratelimit_axum::__private::Limit::new(
                        ::ratelimit_axum::__private::Rate::from_static(const { &[#(#quotas),*] }),
                        #algorithm,
                    ) #setters
                )
            }
        }
        RateSpec::PerRequest(function) => quote_spanned! {at_user(function)=>
            ::ratelimit_axum::__private::RateSource::PerRequest({
                let rate: fn(
                    &::ratelimit_axum::__private::Parts,
                ) -> ::ratelimit_axum::__private::Rate = #function;
                rate
            })
        },
    };
    let config = algorithm_config(limit);
    let backend = optional(limit.backend.as_ref().map(|backend| quote! { #backend }));
    let block = limit.block;
    let skip_if = match &limit.skip_if {
        Some(function) => quote_spanned! {at_user(function)=>
            ::core::option::Option::Some({
                let skip_if: fn(&::ratelimit_axum::__private::Parts) -> bool = #function;
                skip_if
            })
        },
        None => quote! { ::core::option::Option::None },
    };
    let group = group(limit, handler_path);
    let cost = match &limit.cost {
        Cost::Fixed(cost) => {
            let cost = Literal::u64_unsuffixed(*cost);
            quote! { ::ratelimit_axum::__private::CostSource::Fixed(#cost) }
        }
        Cost::PerRequest(function) => quote_spanned! {at_user(function)=>
            ::ratelimit_axum::__private::CostSource::PerRequest({
                let cost: fn(&::ratelimit_axum::__private::Parts) -> u32 = #function;
                cost
            })
        },
    };
    let methods = limit
        .methods
        .iter()
        .map(|method| format_ident!("{}", method));
    let on_error = optional(limit.on_error.map(|on_error| match on_error {
        OnError::Allow => quote! { ::ratelimit_axum::__private::OnError::Allow },
        OnError::Deny => quote! { ::ratelimit_axum::__private::OnError::Deny },
    }));
    let shadow = limit.shadow;
    quote! {
        ::ratelimit_axum::__private::LimitSpec {
            key: #key,
            rate: #rate,
            algorithm: #algorithm,
            config: #config,
            backend: #backend,
            block: #block,
            skip_if: #skip_if,
            group: #group,
            cost: #cost,
            methods: &[#(::ratelimit_axum::__private::Method::#methods),*],
            on_error: #on_error,
            shadow: #shadow,
        }
    }
}

/// Where generated code around a user's function points, so a wrong signature is reported on
/// the user's token; it keeps the macro's hygiene, so lints still treat it as generated.
fn at_user(function: &syn::Expr) -> Span {
    Span::call_site().located_at(function.span())
}

/// What stands for a key function in bucket keys: its path as written (`tenant`,
/// `keys::tenant`), so limits that name one function alike share its buckets within a group;
/// a closure is its handler's and its attribute's own.
fn custom_key_name(function: &syn::Expr, index: usize, handler_path: &TokenStream) -> TokenStream {
    match function {
        syn::Expr::Path(syn::ExprPath {
            qself: None, path, ..
        }) => {
            let written: String = path
                .to_token_stream()
                .to_string()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            quote! { #written }
        }
        _ => {
            let position = format!("::{{key#{index}}}");
            quote! { ::core::concat!(#handler_path, #position) }
        }
    }
}

/// The link-time record `install()` checks backend names against.
fn registered_limit(limit: &LimitSpec, handler_path: &TokenStream) -> TokenStream {
    let group = group(limit, handler_path);
    let rate = match &limit.rate {
        RateSpec::Fixed { text, .. } => text.as_str(),
        RateSpec::PerRequest(_) => "<per request>",
    };
    let algorithm = algorithm(limit.algorithm);
    let backend = optional(limit.backend.as_ref().map(|backend| quote! { #backend }));
    quote! {
        ::ratelimit_axum::__private::inventory::submit! {
            ::ratelimit_axum::__private::RegisteredLimit {
                handler: #handler_path,
                group: #group,
                rate: #rate,
                algorithm: #algorithm,
                backend: #backend,
            }
        }
    }
}

fn group(limit: &LimitSpec, handler_path: &TokenStream) -> TokenStream {
    match &limit.group {
        Some(group) => quote! { #group },
        None => handler_path.clone(),
    }
}

fn algorithm(algorithm: ratelimit_core::Algorithm) -> TokenStream {
    use ratelimit_core::Algorithm;
    let variant = match algorithm {
        Algorithm::FixedWindow => quote! { FixedWindow },
        Algorithm::SlidingWindow => quote! { SlidingWindow },
        Algorithm::SlidingWindowCounter => quote! { SlidingWindowCounter },
        Algorithm::TokenBucket => quote! { TokenBucket },
        Algorithm::LeakyBucket => quote! { LeakyBucket },
    };
    quote! { ::ratelimit_axum::__private::Algorithm::#variant }
}

/// `.bucket_size(200).refill_rate(2.0)` for the settings given.
fn setters(limit: &LimitSpec) -> TokenStream {
    let config = &limit.config;
    let whole = [
        ("bucket_size", config.bucket_size),
        ("initial_tokens", config.initial_tokens),
        ("capacity", config.capacity),
    ];
    let real = [
        ("refill_rate", config.refill_rate),
        ("leak_rate", config.leak_rate),
    ];
    let whole = whole.into_iter().filter_map(|(setter, value)| {
        let setter = format_ident!("{}", setter);
        value.map(|value| (setter, Literal::u64_unsuffixed(value)))
    });
    let real = real.into_iter().filter_map(|(setter, value)| {
        let setter = format_ident!("{}", setter);
        value.map(|value| (setter, Literal::f64_unsuffixed(value)))
    });
    whole
        .chain(real)
        .map(|(setter, value)| quote! { .#setter(#value) })
        .collect()
}

/// The runtime `AlgorithmConfig` (what a per-request rate is enforced with).
fn algorithm_config(limit: &LimitSpec) -> TokenStream {
    let config = &limit.config;
    let whole =
        |value: Option<u64>| optional(value.map(Literal::u64_unsuffixed).map(|v| quote!(#v)));
    let real =
        |value: Option<f64>| optional(value.map(Literal::f64_unsuffixed).map(|v| quote!(#v)));
    if config.bucket_size.is_none()
        && config.refill_rate.is_none()
        && config.initial_tokens.is_none()
        && config.capacity.is_none()
        && config.leak_rate.is_none()
    {
        return quote! { ::ratelimit_axum::__private::AlgorithmConfig::NONE };
    }
    let bucket_size = whole(config.bucket_size);
    let refill_rate = real(config.refill_rate);
    let initial_tokens = whole(config.initial_tokens);
    let capacity = whole(config.capacity);
    let leak_rate = real(config.leak_rate);
    quote! {
        ::ratelimit_axum::__private::AlgorithmConfig {
            bucket_size: #bucket_size,
            refill_rate: #refill_rate,
            initial_tokens: #initial_tokens,
            capacity: #capacity,
            leak_rate: #leak_rate,
        }
    }
}

fn optional(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(value) => quote! { ::core::option::Option::Some(#value) },
        None => quote! { ::core::option::Option::None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        let position = Position { line: 7, column: 1 };
        rate_limit(args, item, position).to_string()
    }

    /// The whole expansion of a handler using most options, pretty-printed: a change to what
    /// the macro emits shows in review as a diff of `snapshots/*.snap` (accept it with
    /// `cargo insta review`, or `INSTA_UPDATE=always cargo test -p ratelimit-macros`).
    #[test]
    fn full_expansion() {
        let output = rate_limit(
            quote!(
                key = "ip",
                rate = "100/h",
                algorithm = "token_bucket",
                block = true,
                skip_if = is_staff
            ),
            quote! {
                /// Lists the caller's orders.
                async fn list_orders(State(db): State<Db>, user: User) -> Json<Vec<Order>> {
                    Json(db.orders_of(&user).await)
                }
            },
            Position { line: 7, column: 1 },
        );
        let file = syn::parse2::<syn::File>(output)
            .unwrap_or_else(|error| panic!("the expansion is not a Rust file: {error}"));
        insta::assert_snapshot!(prettyplease::unparse(&file));
    }

    #[test]
    fn stacked_attributes_become_one_guard_with_every_limit() {
        let output = expand(
            quote!(rate = "10/s"),
            quote! {
                #[rate_limit(rate = "100/h", key = "global")]
                #[doc = "kept"]
                async fn api() {}
            },
        );
        assert_eq!(output.matches("LimitSpec {").count(), 2, "{output}");
        assert_eq!(output.matches("RegisteredLimit {").count(), 2, "{output}");
        assert_eq!(output.matches("Guard <").count(), 1, "{output}");
        assert!(!output.contains("rate_limit"), "{output}");
        assert!(output.contains("\"kept\""), "{output}");
    }

    #[test]
    fn errors_keep_the_function_without_its_attributes() {
        let output = expand(
            quote!(rate = "5/M"),
            quote! {
                #[rate_limit(key = "user")]
                async fn api() {}
            },
        );
        assert!(output.contains("async fn api ()"), "{output}");
        assert_eq!(output.matches("compile_error").count(), 2, "{output}");
        assert!(!output.contains("# [rate_limit"), "{output}");
    }

    #[test]
    fn rates_are_written_as_quotas() {
        let output = expand(
            quote!(rate = "10/s;1000/h", key = "header:X-Api-Key"),
            quote!(
                async fn api() {}
            ),
        );
        assert!(output.contains("quota (10 , 1000)"), "{output}");
        assert!(output.contains("quota (1000 , 3600000)"), "{output}");
        assert!(output.contains("Header (\"x-api-key\")"), "{output}");
        assert!(output.contains("rate : \"10/s;1000/h\""), "{output}");
    }

    #[test]
    fn generics_are_forwarded_without_lifetimes() {
        let output = expand(
            quote!(rate = "1/s"),
            quote!(
                async fn api<'a, T: Send, const N: usize>(value: T) {}
            ),
        );
        assert!(
            output.contains("__ratelimit_inner :: < T , N > (__ratelimit_arg_0)"),
            "{output}"
        );
    }

    #[test]
    fn handlers_naming_self_get_a_sibling() {
        let output = expand(
            quote!(rate = "1/s"),
            quote!(
                async fn api() -> Self {
                    Self
                }
            ),
        );
        assert!(
            output.contains("async fn __ratelimit_inner_api ()"),
            "{output}"
        );
        assert!(
            output.contains("Self :: __ratelimit_inner_api ()"),
            "{output}"
        );
    }
}
