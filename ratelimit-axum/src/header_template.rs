//! The rate-limit headers of an admitted response, added by cloning a prepared header map
//! instead of inserting them one by one.
//!
//! Five `HeaderMap::insert`s hash and place five custom names, and with the handler's
//! `content-type` and the `content-length` axum adds after the handler the map holds seven
//! entries, which `http` keeps in a 12-bucket block (1,248 bytes: above glibc's 1,032-byte
//! thread cache, so it is allocated, copied into and freed on malloc's slow path). A handler
//! answers with the same headers request after request, so each thread keeps a few templates:
//! the handler's headers followed by the rate-limit headers, already hashed and placed. A
//! response whose headers match one gets a clone of it, with the per-response values written
//! in place. A clone holds exactly its entries; a template of a response without
//! `content-length` ends with one, which the clone drops again, so that axum's own
//! `content-length` fits without growing the map.
//!
//! The result is the map that inserting the fields one by one gives, in the same order.

use std::cell::RefCell;

use http::header::{CONTENT_LENGTH, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

use crate::headers::{Field, Values, X_RATELIMIT_RESET, layout, reset_at};
use crate::settings::HeaderFields;

/// Templates kept per thread, so that a few handlers served in turn all find theirs.
const SLOTS: usize = 4;

/// After a response that no template fits, up to this many more are answered without building
/// one (the gap doubles with each build): a handler whose headers change every time (an `ETag`,
/// a cookie) then pays for a template it never reuses only once in a while.
const MAX_BACKOFF: u32 = 64;

thread_local! {
    static TEMPLATES: RefCell<Templates> = RefCell::new(Templates::default());
}

/// Adds the `fields` of `values` to `headers` from a template. `false` when none fits and none
/// is built this time: the caller then inserts the fields itself.
#[inline]
pub(crate) fn apply(
    headers: &mut HeaderMap,
    values: &mut Values<'_>,
    fields: HeaderFields,
) -> bool {
    // `try_with`: while the thread is torn down its templates are gone.
    TEMPLATES
        .try_with(|templates| {
            templates
                .try_borrow_mut()
                .is_ok_and(|mut templates| templates.apply(headers, values, fields))
        })
        .unwrap_or(false)
}

#[derive(Default)]
struct Templates {
    slots: [Option<Template>; SLOTS],
    /// The slot the next new template takes.
    next: usize,
    /// Misses to answer without building a template, and the gap after the next build.
    skip: u32,
    backoff: u32,
}

impl Templates {
    #[inline]
    fn apply(
        &mut self,
        headers: &mut HeaderMap,
        values: &mut Values<'_>,
        fields: HeaderFields,
    ) -> bool {
        let (limit, window_secs) = values.limit_and_window();
        let found = self.slots.iter().position(|slot| {
            slot.as_ref()
                .is_some_and(|template| template.fits(headers, fields, limit, window_secs))
        });
        let template = match found {
            Some(index) => self.slots[index].as_mut(),
            None => {
                if self.skip > 0 {
                    self.skip -= 1;
                    return false;
                }
                self.backoff = (self.backoff * 2).clamp(1, MAX_BACKOFF);
                self.skip = self.backoff;
                let Some(template) = Template::build(headers, values, fields) else {
                    return false;
                };
                let index = self.next;
                self.next = (index + 1) % SLOTS;
                Some(self.slots[index].insert(template))
            }
        };
        template.is_some_and(|template| {
            template.fill(headers, values);
            true
        })
    }
}

/// One response layout: the handler's headers, then the rate-limit fields.
struct Template {
    fields: HeaderFields,
    limit: u64,
    window_secs: u64,
    /// How many of `map`'s values are the handler's (they come first).
    handler_values: usize,
    /// The handler's headers, the rate-limit fields (per-response values left empty), and
    /// maybe the `content-length` slot.
    map: HeaderMap,
    /// `map` ends with a `content-length` entry that each clone drops.
    content_length_slot: bool,
    /// The unix second `map`'s `X-RateLimit-Reset` value shows; `None` while it is empty (or
    /// the fields have none).
    reset_at_secs: Option<u64>,
}

impl Template {
    /// The template for `headers`, unless the handler set one of the rate-limit fields itself
    /// (inserting replaces it, which a template does not reproduce), or the response sets a
    /// cookie or carries a value marked sensitive: a template lives on in the thread, and a
    /// session token must not outlive its response there.
    fn build(headers: &HeaderMap, values: &mut Values<'_>, fields: HeaderFields) -> Option<Self> {
        if headers.contains_key(SET_COOKIE) || headers.values().any(HeaderValue::is_sensitive) {
            return None;
        }
        let handler_values = headers.len();
        let mut map = headers.clone();
        for &field in layout(fields) {
            let value = if field.is_per_response() {
                HeaderValue::from_static("")
            } else {
                values.of(field)
            };
            map.insert(field.name(), value);
        }
        if map.len() != handler_values + layout(fields).len() {
            return None;
        }
        let content_length_slot = !map.contains_key(CONTENT_LENGTH);
        if content_length_slot {
            map.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        let (limit, window_secs) = values.limit_and_window();
        Some(Self {
            fields,
            limit,
            window_secs,
            handler_values,
            map,
            content_length_slot,
            reset_at_secs: None,
        })
    }

    /// Whether this is the template of `headers` (same values, order and sensitivity) and of
    /// these fields and limit.
    #[inline]
    fn fits(
        &self,
        headers: &HeaderMap,
        fields: HeaderFields,
        limit: u64,
        window_secs: u64,
    ) -> bool {
        self.limit == limit
            && self.window_secs == window_secs
            && self.fields == fields
            && headers.len() == self.handler_values
            && headers.iter().zip(self.map.iter()).all(
                |((name, value), (template_name, template_value))| {
                    name == template_name
                        && value == template_value
                        && value.is_sensitive() == template_value.is_sensitive()
                },
            )
    }

    /// Replaces `headers` (which this template fits) with a clone carrying `values`.
    #[inline]
    fn fill(&mut self, headers: &mut HeaderMap, values: &mut Values<'_>) {
        // `X-RateLimit-Reset` changes at most once a second, so the template carries the current
        // value, rewritten when the second changes, and each clone takes it along (one
        // reference count) instead of a placeholder that is then replaced.
        if layout(self.fields).contains(&Field::Reset) {
            let at_secs = values.reset_at_secs();
            if self.reset_at_secs != Some(at_secs) {
                if let Some(value) = self.map.get_mut(X_RATELIMIT_RESET) {
                    *value = reset_at(at_secs);
                }
                self.reset_at_secs = Some(at_secs);
            }
        }
        let mut map = self.map.clone();
        if self.content_length_slot {
            // The last entry, so removing it moves no other entry.
            map.remove(CONTENT_LENGTH);
        }
        let fields = map.values_mut().skip(self.handler_values);
        for (&field, value) in layout(self.fields).iter().zip(fields) {
            if field.is_per_response() && field != Field::Reset {
                *value = values.of(field);
            }
        }
        *headers = map;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::header::CONTENT_TYPE;
    use ratelimit_core::Decision;

    use crate::headers::{self, X_RATELIMIT_LIMIT, X_RATELIMIT_RESET};
    use crate::settings::HeaderFields;

    use super::*;

    fn decision(limit: u64, remaining: u64) -> Decision {
        Decision {
            allowed: true,
            limit,
            remaining,
            reset_after: Duration::from_secs(30),
            retry_after: None,
            window: Duration::from_secs(60),
        }
    }

    /// The map of inserting one by one: `with_retry_after` skips the template, and with no
    /// `retry_after` in the decision adds nothing else.
    fn inserted(handler: &HeaderMap, decision: &Decision, fields: HeaderFields) -> HeaderMap {
        let mut map = handler.clone();
        headers::insert_fields(&mut map, decision, true, fields);
        map
    }

    /// Names, values and sensitivity in order; the reset time only roughly, as a second may
    /// pass between two maps.
    fn assert_same(actual: &HeaderMap, expected: &HeaderMap) {
        let entries = |map: &HeaderMap| -> Vec<(String, Vec<u8>, bool)> {
            map.iter()
                .map(|(name, value)| {
                    let bytes = if name == X_RATELIMIT_RESET {
                        Vec::new()
                    } else {
                        value.as_bytes().to_vec()
                    };
                    (name.to_string(), bytes, value.is_sensitive())
                })
                .collect()
        };
        assert_eq!(entries(actual), entries(expected));
    }

    fn handler_headers() -> Vec<HeaderMap> {
        let mut text = HeaderMap::new();
        text.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let mut with_length = text.clone();
        with_length.insert(CONTENT_LENGTH, HeaderValue::from_static("2"));
        let mut cookies = text.clone();
        cookies.append(SET_COOKIE, HeaderValue::from_static("a=1"));
        cookies.append(SET_COOKIE, HeaderValue::from_static("b=2"));
        let mut sensitive = text.clone();
        let mut secret = HeaderValue::from_static("s");
        secret.set_sensitive(true);
        sensitive.insert("x-secret", secret);
        let mut own_limit = text.clone();
        own_limit.insert(X_RATELIMIT_LIMIT, HeaderValue::from_static("7"));
        vec![
            HeaderMap::new(),
            text,
            with_length,
            cookies,
            sensitive,
            own_limit,
        ]
    }

    #[test]
    fn a_template_gives_the_map_of_inserting_one_by_one() {
        for fields in [
            HeaderFields::All,
            HeaderFields::Ietf,
            HeaderFields::XRateLimit,
        ] {
            for handler in handler_headers() {
                // Enough rounds for templates to be built, found and reused with new values.
                for remaining in (0..200).rev() {
                    let decision = decision(200 + remaining % 3, remaining);
                    let mut actual = handler.clone();
                    headers::insert_fields(&mut actual, &decision, false, fields);
                    assert_same(&actual, &inserted(&handler, &decision, fields));
                    // axum's `content-length` still lands at the end.
                    if !handler.contains_key(CONTENT_LENGTH) {
                        actual.insert(CONTENT_LENGTH, HeaderValue::from_static("2"));
                        assert_eq!(actual.keys().last(), Some(&CONTENT_LENGTH));
                    }
                }
            }
        }
    }

    #[test]
    fn the_reset_time_follows_each_responses_decision() {
        let wall_secs = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since_epoch| since_epoch.as_secs())
        };
        let mut handler = HeaderMap::new();
        handler.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        // One limit, so one template, whose reset value must change with every decision.
        for reset_secs in [30, 90, 30, 3_600, 3_600, 0, 30] {
            let decision = Decision {
                reset_after: Duration::from_secs(reset_secs),
                ..decision(5, 4)
            };
            let earliest = wall_secs() + reset_secs;
            let mut actual = handler.clone();
            headers::insert_fields(&mut actual, &decision, false, HeaderFields::All);
            let latest = wall_secs() + reset_secs;
            let shown = actual
                .get(X_RATELIMIT_RESET)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<u64>().ok());
            assert!(
                shown.is_some_and(|shown| (earliest..=latest).contains(&shown)),
                "{shown:?} outside {earliest}..={latest} for a reset in {reset_secs} s"
            );
        }
    }

    #[test]
    fn no_template_keeps_a_cookie_or_a_sensitive_value() {
        for handler in handler_headers() {
            for _ in 0..10 {
                let mut actual = handler.clone();
                headers::insert_fields(&mut actual, &decision(5, 4), false, HeaderFields::All);
            }
        }
        let kept_private = TEMPLATES.with(|templates| {
            templates.borrow().slots.iter().flatten().any(|template| {
                template.map.contains_key(SET_COOKIE)
                    || template.map.values().any(HeaderValue::is_sensitive)
            })
        });
        assert!(
            !kept_private,
            "a template holds a cookie or a sensitive value"
        );
    }

    #[test]
    fn a_responses_own_sensitivity_is_never_taken_from_a_template() {
        let mut plain = HeaderMap::new();
        plain.insert("x-secret", HeaderValue::from_static("s"));
        let mut secret = plain.clone();
        if let Some(value) = secret.get_mut("x-secret") {
            value.set_sensitive(true);
        }
        for _ in 0..10 {
            for handler in [&plain, &secret] {
                let mut actual = handler.clone();
                headers::insert_fields(&mut actual, &decision(5, 4), false, HeaderFields::All);
                assert_same(
                    &actual,
                    &inserted(handler, &decision(5, 4), HeaderFields::All),
                );
            }
        }
    }
}
