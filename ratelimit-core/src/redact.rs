//! Credentials out of URLs and messages, before they reach any output: the CLI, logs, health
//! reports and configuration errors all show URLs through [`url`], and free text that may
//! hold one (a driver's error, a misplaced value) through [`text`].
//!
//! What is masked (replaced by `***`):
//! - the password of `scheme://user:password@host`. The userinfo ends at the **last** `@`,
//!   so a password may hold `#`, `/`, `?`, `:` or `@` as people write them, unencoded. The user
//!   name stays: it names the account an operator has to check, and is not a secret.
//! - the value of every query parameter whose name holds a credential, in any case: `password`,
//!   `pass`, `passwd`, `pwd`, `auth`, `token`, `secret`, and any name containing `pass`,
//!   `pwd`, `token`, `secret`, `apikey`, `api_key` or `credential` (`sslpassword`,
//!   `auth_token`, `client_secret`, ...). A value runs to the next `&name=`, so a raw `&` or
//!   `#` inside it is masked too.
//!
//! Scheme, user, host, port, path and the other parameters stay, so the output still says
//! where a backend connects. Nothing here fails or panics: text that is not a URL comes back
//! as it was, unless it holds `name=value` pairs of those names.
//!
//! Where a URL is ambiguous (an unencoded `@` in a query), the reading that masks more wins:
//! a secret is never shown, at worst a host is.
//!
//! ```
//! use ratelimit_core::redact;
//!
//! assert_eq!(redact::url("postgres://app:s3cr#t/?@db:5432/x"), "postgres://app:***@db:5432/x");
//! assert_eq!(
//!     redact::url("redis+unix:///run/redis.sock?db=1&PASS=hunter2"),
//!     "redis+unix:///run/redis.sock?db=1&PASS=***",
//! );
//! assert_eq!(
//!     redact::text("cannot reach \"redis://:pw@10.0.0.5:6379\"; password=pw"),
//!     "cannot reach \"redis://:***@10.0.0.5:6379\"; password=***",
//! );
//! ```

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// `url` with its password and credential query parameters masked (see the module docs).
#[must_use]
pub fn url(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(end) => url.split_at(end + 3),
        None => ("", url),
    };
    let mut masked = String::with_capacity(url.len());
    masked.push_str(head);
    // Without a scheme there is no userinfo: `sqlite:x@y.db` names a file.
    let userinfo = rest.rfind('@').filter(|_| !head.is_empty()).and_then(|at| {
        rest[..at]
            .split_once(':')
            .map(|(user, _)| (user, &rest[at..]))
    });
    let tail = match userinfo {
        Some((user, host_and_path)) => format!("{user}:{MASK}{host_and_path}"),
        None => rest.to_owned(),
    };
    // Parameters after the host, and any left of the last `@` when a `?` or `&` came first
    // (a user name cannot hold one, so that text was a query).
    mask_parameters(&mut masked, &tail);
    masked
}

/// `text` with every URL in it passed through [`url`], and every `name=value` pair whose name
/// holds a credential masked. A URL or a value runs to the next space or quote.
#[must_use]
pub fn text(text: &str) -> String {
    let mut masked = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !is_separator(c)) {
        masked.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(is_separator).unwrap_or(rest.len());
        let word = &rest[..end];
        match word.find("://") {
            Some(scheme_end) => {
                let start = run_start(&word[..scheme_end], |c| {
                    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
                });
                masked.push_str(&word[..start]);
                masked.push_str(&url(&word[start..]));
            }
            None => mask_parameters(&mut masked, word),
        }
        rest = &rest[end..];
    }
    masked.push_str(rest);
    masked
}

/// Where a URL or a `name=value` pair ends in free text.
fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>')
}

/// Appends `text` to `out`, split at every `?` and `&`, with the value of each credential
/// parameter masked: `name=value` where the name is the run of name characters before the
/// `=`. A piece without `=` after a credential is the rest of its value (a raw `?` or `&` in
/// a password) and is masked with it.
fn mask_parameters(out: &mut String, text: &str) {
    let mut in_secret = false;
    let mut separator = None;
    let mut rest = text;
    loop {
        let end = rest.find(['?', '&']).unwrap_or(rest.len());
        let piece = &rest[..end];
        let name = piece.split_once('=').map(|(before, _)| {
            let start = run_start(before, is_name_char);
            (&before[..start], &before[start..])
        });
        match name {
            Some((prefix, name)) if !name.is_empty() => {
                in_secret = is_credential(name);
                out.extend(separator);
                if in_secret {
                    out.push_str(prefix);
                    out.push_str(name);
                    out.push('=');
                    out.push_str(MASK);
                } else {
                    out.push_str(piece);
                }
            }
            _ if in_secret => {}
            _ => {
                out.extend(separator);
                out.push_str(piece);
            }
        }
        let Some(next) = rest[end..].chars().next() else {
            break;
        };
        separator = Some(next);
        rest = &rest[end + next.len_utf8()..];
    }
}

/// The byte index where the run of `keep` characters that ends `text` starts.
fn run_start(text: &str, keep: impl Fn(char) -> bool) -> usize {
    text.char_indices()
        .rev()
        .find(|&(_, c)| !keep(c))
        .map_or(0, |(index, c)| index + c.len_utf8())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '%')
}

/// Whether a parameter named `name` (maybe percent-encoded) carries a credential.
fn is_credential(name: &str) -> bool {
    let name = percent_decoded_lowercase(name);
    name == "auth"
        || [
            "pass",
            "pwd",
            "token",
            "secret",
            "apikey",
            "api_key",
            "credential",
        ]
        .iter()
        .any(|part| name.contains(part))
}

/// `%70ass` as `pass`; a malformed escape stays as written.
fn percent_decoded_lowercase(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        let escaped = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(value) => {
                decoded.push(value);
                index += 3;
            }
            None => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_passwords_are_masked_and_users_kept() {
        for (raw, shown) in [
            (
                "postgres://app:secret@db:5432/x",
                "postgres://app:***@db:5432/x",
            ),
            ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
            (
                "postgres://u:s3cr3t#/?x@host/db",
                "postgres://u:***@host/db",
            ),
            ("mysql://u:p@ss:w/rd@host/db", "mysql://u:***@host/db"),
            (
                "postgres://user@tenant:pw@tenant.example.com/db",
                "postgres://user@tenant:***@tenant.example.com/db",
            ),
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://user@host/0", "redis://user@host/0"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("", ""),
            ("://", "://"),
            ("@", "@"),
            (":@", ":@"),
            ("x://:@", "x://:***@"),
        ] {
            assert_eq!(url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn credential_parameters_are_masked_in_any_case() {
        for (raw, shown) in [
            (
                "postgres://db/app?password=hunter2",
                "postgres://db/app?password=***",
            ),
            (
                "redis+unix:///run/r.sock?db=1&pass=hunter2",
                "redis+unix:///run/r.sock?db=1&pass=***",
            ),
            (
                "postgres://db/app?sslmode=require&SSLPassword=x&application_name=a",
                "postgres://db/app?sslmode=require&SSLPassword=***&application_name=a",
            ),
            (
                "mysql://h/d?Token=a&auth=b&secret=c&api_key=d",
                "mysql://h/d?Token=***&auth=***&secret=***&api_key=***",
            ),
            (
                "postgres://db/app?password=a&b#c/d?e&sslmode=disable",
                "postgres://db/app?password=***&sslmode=disable",
            ),
            (
                "postgres://db/app?pa%73sword=x",
                "postgres://db/app?pa%73sword=***",
            ),
            (
                "postgres://u:pw@h/d?e=a@b&password=z",
                "postgres://u:***@b&password=***",
            ),
            ("sqlite:x.db?password=x", "sqlite:x.db?password=***"),
            ("postgres://db/app?", "postgres://db/app?"),
            ("postgres://db/app?&&=&", "postgres://db/app?&&=&"),
        ] {
            assert_eq!(url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn urls_and_pairs_in_free_text_are_masked() {
        assert_eq!(
            text("backend `x` at postgres://u:pw@h/db?token=t could not connect"),
            "backend `x` at postgres://u:***@h/db?token=*** could not connect"
        );
        assert_eq!(
            text("`redis.url` = \"http://a:b@c\" is not"),
            "`redis.url` = \"http://a:***@c\" is not"
        );
        assert_eq!(text("(url=redis://:p@h)"), "(url=redis://:***@h)");
        assert_eq!(
            text("host=h password=p\tuser=u"),
            "host=h password=***\tuser=u"
        );
        assert_eq!(text("plain words, 5/m"), "plain words, 5/m");
        assert_eq!(text(""), "");
    }

    #[test]
    fn garbage_never_panics() {
        for raw in [
            "%",
            "%%",
            "%zz",
            "?",
            "??",
            "&",
            "=",
            "://@:?&=#",
            "é://ü:ö@ä?ß=∂&pässword=ñ",
            "a%",
            "\u{0}://\u{0}",
        ] {
            let _ = url(raw);
            let _ = text(raw);
        }
        assert_eq!(url("é://ü:ö@ä?pässword=ñ"), "é://ü:***@ä?pässword=ñ");
    }
}
