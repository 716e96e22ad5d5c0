//! Compile-time behaviour of `#[rate_limit]`: what compiles (`ui/pass`) and the exact error
//! for what must not (`ui/fail/*.rs` + `.stderr`). Regenerate snapshots with
//! `TRYBUILD=overwrite cargo test -p ratelimit-macros --test ui`, then read every diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
