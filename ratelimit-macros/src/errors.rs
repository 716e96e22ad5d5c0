//! Every error of one expansion, gathered so that one compile reports them all (serde_derive's
//! `Ctxt`, without the panic-on-drop: the stages here hand the errors back explicitly).

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;

/// Errors found so far, combined with [`syn::Error::combine`] as they come.
#[derive(Default)]
pub(crate) struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(combined) => combined.combine(error),
            None => self.combined = Some(error),
        }
    }

    /// Records an error spanned on `tokens`.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// The value of `result`, recording its error instead.
    pub(crate) fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// Records every error of `other`.
    pub(crate) fn extend(&mut self, other: Self) {
        if let Some(error) = other.combined {
            self.push(error);
        }
    }

    /// Every error recorded, for a caller that knows at least one was.
    pub(crate) fn into_error(self) -> syn::Error {
        self.combined.unwrap_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "internal error in `#[rate_limit]`: a check failed without saying why; please \
                 report this",
            )
        })
    }

    /// `Ok(value)` when nothing was recorded, otherwise every error at once.
    pub(crate) fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.combined {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
}
