//! Compile-time behaviour of `#[rate_limit]`: what compiles and runs (`ui/pass`) and the exact
//! error for what must not compile (`ui/fail/*.rs` + `.stderr`), one scenario per file.
//!
//! Regenerate snapshots with `TRYBUILD=overwrite cargo test -p ratelimit-macros --test ui`,
//! then read every changed `.stderr`. trybuild runs rustc only; to lint the expansions with
//! clippy after a run: `cd target/tests/trybuild/ratelimit-macros && cargo clippy --bin <name>`
//! with the `trybuildNNN` names its `Cargo.toml` gives the `ui/pass` files.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
