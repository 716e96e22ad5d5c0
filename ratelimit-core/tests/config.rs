//! Configuration: every field of the file, environment overrides (as pairs, never the process
//! environment, so tests run in parallel), one test per invalid field, and registries built
//! from configs.
#![cfg(feature = "config")]

use std::time::Duration;

use ratelimit_core::config::{BackendKind, ConnectPolicy, ENV_VARS};
use ratelimit_core::{
    Algorithm, ClientIpHeader, Config, ConfigError, Limit, OnError, Rate, Registry,
};

/// The config file of the SPEC, verbatim.
const SPEC_EXAMPLE: &str = r#"
backend = "redis"                 # default backend: memory | redis | database | multi | a [[backends]] name
key_prefix = "ratelimit:"
on_backend_error = "allow"        # allow | deny
trusted_proxies = ["10.0.0.0/8"]
ipv6_prefix = 64
[redis]
url = "redis://127.0.0.1:6379"
[database]
url = "postgres://postgres@127.0.0.1:5432/test"
[[backends]]                      # named backends, for failover and per-handler `backend = ".."`
name = "primary_redis"
type = "redis"
url = "redis://10.0.0.5:6379"
[multi]
backends = ["primary_redis", "memory"]
[circuit_breaker]
failure_threshold = 5
recovery_timeout = "60s"
[middleware]
default_rate = "1000/h"
skip_paths = ["/health"]
[middleware.rate_limits]
"/api/auth/" = "10/m"
"/api/" = "500/h"
"#;

fn parse(text: &str) -> Config {
    Config::from_toml_str(text).unwrap_or_else(|error| panic!("{error}"))
}

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

/// The message of the error `text` must produce.
fn error_of(text: &str) -> String {
    match Config::from_toml_str(text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

/// Asserts the message names the field and shows the value.
fn assert_names(message: &str, field: &str, value: &str) {
    assert!(
        message.contains(field),
        "field {field:?} missing from: {message}"
    );
    assert!(
        message.contains(value),
        "value {value:?} missing from: {message}"
    );
}

fn names(config: &Config) -> Vec<&str> {
    config
        .backends()
        .iter()
        .map(|backend| backend.name())
        .collect()
}

// ---- every field ----

#[test]
fn the_spec_example_parses_into_every_field() {
    let config = parse(SPEC_EXAMPLE);
    assert_eq!(config.default_backend(), "redis");
    assert_eq!(config.key_prefix(), "ratelimit:");
    assert_eq!(config.on_backend_error(), OnError::Allow);
    let proxies: Vec<String> = config
        .trusted_proxies()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8"]);
    assert_eq!(config.ipv6_prefix(), 64);
    assert_eq!(
        names(&config),
        ["memory", "redis", "database", "primary_redis", "multi"]
    );
    let kind = |name| config.backend(name).map(|backend| backend.kind().clone());
    assert_eq!(kind("memory"), Some(BackendKind::Memory));
    assert_eq!(
        kind("redis"),
        Some(BackendKind::Redis {
            url: "redis://127.0.0.1:6379".into()
        })
    );
    assert_eq!(
        kind("database"),
        Some(BackendKind::Database {
            url: "postgres://postgres@127.0.0.1:5432/test".into(),
            table_prefix: "ratelimit_".into()
        })
    );
    assert_eq!(
        kind("primary_redis"),
        Some(BackendKind::Redis {
            url: "redis://10.0.0.5:6379".into()
        })
    );
    assert_eq!(
        kind("multi"),
        Some(BackendKind::Multi {
            members: vec!["primary_redis".into(), "memory".into()]
        })
    );
    let breaker = config.circuit_breaker();
    assert_eq!(breaker.failure_threshold, 5);
    assert_eq!(breaker.recovery_timeout, Duration::from_secs(60));
    // Unset fields keep their defaults.
    assert_eq!(breaker.reset_timeout, Duration::from_secs(300));
    assert_eq!(breaker.half_open_max_calls, 1);
    let Some(middleware) = config.middleware() else {
        panic!("no middleware section")
    };
    assert_eq!(middleware.default_rate, Some(rate("1000/h")));
    assert_eq!(middleware.skip_paths, ["/health"]);
    assert_eq!(
        middleware.rate_limits,
        [
            ("/api/auth/".to_owned(), rate("10/m")),
            ("/api/".to_owned(), rate("500/h"))
        ]
    );
    assert_eq!(middleware.algorithm, Algorithm::FixedWindow);
    assert_eq!(middleware.backend, None);
}

#[test]
fn every_circuit_breaker_field_and_duration_unit() {
    let config = parse(
        r#"
        [circuit_breaker]
        failure_threshold = 3
        recovery_timeout = "250ms"
        reset_timeout = "5m"
        half_open_max_calls = 2
        backoff_multiplier = 1.5
        backoff_max = "2h"
        "#,
    );
    let breaker = config.circuit_breaker();
    assert_eq!(breaker.failure_threshold, 3);
    assert_eq!(breaker.recovery_timeout, Duration::from_millis(250));
    assert_eq!(breaker.reset_timeout, Duration::from_secs(300));
    assert_eq!(breaker.half_open_max_calls, 2);
    assert!((breaker.backoff_multiplier - 1.5).abs() < f64::EPSILON);
    assert_eq!(breaker.backoff_max, Duration::from_secs(7_200));
    let config = parse("[circuit_breaker]\nbackoff_multiplier = 3\nreset_timeout = \"1d\"");
    assert!((config.circuit_breaker().backoff_multiplier - 3.0).abs() < f64::EPSILON);
    assert_eq!(
        config.circuit_breaker().reset_timeout,
        Duration::from_secs(86_400)
    );
}

#[test]
fn an_empty_file_is_the_zero_configuration() {
    let config = parse("");
    assert_eq!(config, Config::default());
    assert_eq!(names(&config), ["memory"]);
    assert_eq!(config.default_backend(), "memory");
    assert_eq!(config.key_prefix(), "ratelimit:");
    assert_eq!(config.on_backend_error(), OnError::Allow);
    assert!(config.trusted_proxies().is_empty());
    assert_eq!(config.client_ip_header(), ClientIpHeader::XForwardedFor);
    assert_eq!(config.ipv6_prefix(), 64);
    assert_eq!(config.circuit_breaker(), &Default::default());
    assert!(config.middleware().is_none());
}

#[test]
fn named_backends_of_every_type_and_the_optional_fields() {
    let config = parse(
        r#"
        backend = "fallback"
        on_backend_error = "deny"
        trusted_proxies = ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]
        client_ip_header = "CF-Connecting-IP"
        ipv6_prefix = 48
        [database]
        url = "sqlite::memory:"
        table_prefix = "rl_"
        [[backends]]
        name = "fallback"
        type = "memory"
        [[backends]]
        name = "audit-db"
        type = "database"
        url = "mysql://root@127.0.0.1:3306/test"
        table_prefix = "audit_"
        [middleware]
        algorithm = "sliding_window"
        backend = "fallback"
        [middleware.rate_limits]
        "/a/" = "1/s"
        "/a/longer/" = "2/s"
        "#,
    );
    assert_eq!(config.default_backend(), "fallback");
    assert_eq!(config.on_backend_error(), OnError::Deny);
    assert_eq!(config.trusted_proxies().len(), 3);
    assert_eq!(config.client_ip_header(), ClientIpHeader::CfConnectingIp);
    assert_eq!(config.ipv6_prefix(), 48);
    assert_eq!(
        names(&config),
        ["memory", "database", "fallback", "audit-db"]
    );
    assert_eq!(
        config.backend("database").map(|b| b.kind().clone()),
        Some(BackendKind::Database {
            url: "sqlite::memory:".into(),
            table_prefix: "rl_".into()
        })
    );
    assert_eq!(
        config.backend("audit-db").map(|b| b.kind().clone()),
        Some(BackendKind::Database {
            url: "mysql://root@127.0.0.1:3306/test".into(),
            table_prefix: "audit_".into()
        })
    );
    assert_eq!(
        config.backend("audit-db").map(|b| b.source()),
        Some("backends[1]")
    );
    let Some(middleware) = config.middleware() else {
        panic!("no middleware section")
    };
    assert_eq!(middleware.algorithm, Algorithm::SlidingWindow);
    assert_eq!(middleware.backend.as_deref(), Some("fallback"));
    assert_eq!(middleware.default_rate, None);
    // Longest prefix first: the order the layer matches in.
    let prefixes: Vec<&str> = middleware
        .rate_limits
        .iter()
        .map(|(prefix, _)| prefix.as_str())
        .collect();
    assert_eq!(prefixes, ["/a/longer/", "/a/"]);
}

#[test]
fn debug_output_masks_url_passwords() {
    let config = parse("[database]\nurl = \"postgres://app:hunter2@db:5432/x\"");
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("postgres://app:***@db:5432/x"), "{debug}");
}

#[test]
fn a_file_is_read_from_disk_and_a_missing_one_is_named() {
    let path =
        std::env::temp_dir().join(format!("ratelimit-config-test-{}.toml", std::process::id()));
    std::fs::write(&path, SPEC_EXAMPLE).unwrap_or_else(|error| panic!("{error}"));
    let config = Config::from_toml_file(&path).unwrap_or_else(|error| panic!("{error}"));
    let _ = std::fs::remove_file(&path);
    assert_eq!(config, parse(SPEC_EXAMPLE));

    let missing = std::env::temp_dir().join("ratelimit-config-test-does-not-exist.toml");
    let message = Config::from_toml_file(&missing)
        .map(|_| ())
        .map_err(|error| error.to_string())
        .err()
        .unwrap_or_default();
    assert_names(&message, "cannot read config file", "does-not-exist.toml");
}

#[test]
fn a_bad_field_in_a_file_names_the_file() {
    let path = std::env::temp_dir().join(format!(
        "ratelimit-config-test-bad-{}.toml",
        std::process::id()
    ));
    std::fs::write(&path, "[circuit_breaker]\nfailure_treshold = 5\n")
        .unwrap_or_else(|error| panic!("{error}"));
    let message = Config::from_toml_file(&path)
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    let _ = std::fs::remove_file(&path);
    assert_names(&message, "failure_treshold", "ratelimit-config-test-bad-");
}

// ---- the environment ----

#[test]
fn every_variable_alone_over_the_defaults() {
    let config = Config::from_env_vars([
        ("RATELIMIT_BACKEND", "redis"),
        ("RATELIMIT_REDIS_URL", "redis://10.1.1.1:6379/2"),
        ("RATELIMIT_DATABASE_URL", "sqlite::memory:"),
        ("RATELIMIT_KEY_PREFIX", "app:"),
        ("RATELIMIT_ON_BACKEND_ERROR", "deny"),
        (
            "RATELIMIT_TRUSTED_PROXIES",
            "10.0.0.0/8, 192.0.2.7 ,,fd00::/8",
        ),
        ("RATELIMIT_CLIENT_IP_HEADER", " fly-client-ip "),
    ])
    .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.default_backend(), "redis");
    assert_eq!(names(&config), ["memory", "redis", "database"]);
    assert_eq!(
        config
            .backend("redis")
            .map(|b| (b.kind().clone(), b.source())),
        Some((
            BackendKind::Redis {
                url: "redis://10.1.1.1:6379/2".into()
            },
            "RATELIMIT_REDIS_URL"
        ))
    );
    assert_eq!(
        config.backend("database").map(|b| b.kind().clone()),
        Some(BackendKind::Database {
            url: "sqlite::memory:".into(),
            table_prefix: "ratelimit_".into()
        })
    );
    assert_eq!(config.key_prefix(), "app:");
    assert_eq!(config.on_backend_error(), OnError::Deny);
    let proxies: Vec<String> = config
        .trusted_proxies()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]);
    assert_eq!(config.client_ip_header(), ClientIpHeader::FlyClientIp);
    assert_eq!(ENV_VARS.len(), 7);
}

#[test]
fn variables_override_the_file() {
    let config = parse(SPEC_EXAMPLE)
        .with_env_vars([
            ("RATELIMIT_BACKEND", "multi"),
            ("RATELIMIT_REDIS_URL", "redis://redis.internal:6380"),
            ("RATELIMIT_DATABASE_URL", "mysql://root@db.internal/test"),
            ("RATELIMIT_KEY_PREFIX", "other:"),
            ("RATELIMIT_ON_BACKEND_ERROR", "deny"),
            ("RATELIMIT_TRUSTED_PROXIES", "172.16.0.0/12"),
            ("RATELIMIT_CLIENT_IP_HEADER", "Forwarded"),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.default_backend(), "multi");
    assert_eq!(config.client_ip_header(), ClientIpHeader::Forwarded);
    assert_eq!(
        config.backend("redis").map(|b| b.kind().clone()),
        Some(BackendKind::Redis {
            url: "redis://redis.internal:6380".into()
        })
    );
    assert_eq!(
        config.backend("database").map(|b| b.kind().clone()),
        Some(BackendKind::Database {
            url: "mysql://root@db.internal/test".into(),
            table_prefix: "ratelimit_".into()
        })
    );
    assert_eq!(config.key_prefix(), "other:");
    assert_eq!(config.on_backend_error(), OnError::Deny);
    assert_eq!(config.trusted_proxies().len(), 1);
    // Everything else stays as the file says, in the same registry order.
    assert_eq!(
        names(&config),
        ["memory", "redis", "database", "primary_redis", "multi"]
    );
    assert_eq!(config.ipv6_prefix(), 64);
    assert!(config.middleware().is_some());
}

#[test]
fn a_database_url_from_the_environment_keeps_the_files_table_prefix() {
    let config = parse("[database]\nurl = \"sqlite::memory:\"\ntable_prefix = \"mine_\"")
        .with_env_vars([("RATELIMIT_DATABASE_URL", "postgres://db/app")])
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        config.backend("database").map(|b| b.kind().clone()),
        Some(BackendKind::Database {
            url: "postgres://db/app".into(),
            table_prefix: "mine_".into()
        })
    );
}

#[test]
fn empty_and_unrelated_variables_change_nothing() {
    let file = parse(SPEC_EXAMPLE);
    let config = file
        .clone()
        .with_env_vars([
            ("RATELIMIT_BACKEND", ""),
            ("RATELIMIT_REDIS_URL", "  "),
            ("RATELIMIT_TRUSTED_PROXIES", ""),
            ("RATELIMIT_CLIENT_IP_HEADER", " "),
            ("RATELIMIT_REQUIRE_SERVICES", "1"),
            ("PATH", "/usr/bin"),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config, file);
    assert_eq!(
        Config::from_env_vars(Vec::<(String, String)>::new())
            .unwrap_or_else(|error| panic!("{error}")),
        Config::default()
    );
}

#[test]
fn a_redis_url_from_the_environment_makes_backend_redis_valid() {
    let config = parse("backend = \"memory\"")
        .with_env_vars([
            ("RATELIMIT_BACKEND", "redis"),
            ("RATELIMIT_REDIS_URL", "redis://127.0.0.1:6379"),
        ])
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(config.default_backend(), "redis");
}

#[test]
fn env_backend_redis_without_a_url_names_the_variable() {
    let message = Config::from_env_vars([("RATELIMIT_BACKEND", "redis")])
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert_names(&message, "RATELIMIT_BACKEND", "\"redis\"");
    assert!(message.contains("RATELIMIT_REDIS_URL"), "{message}");
}

#[test]
fn env_backend_unknown_names_the_variable() {
    let message = parse(SPEC_EXAMPLE)
        .with_env_vars([("RATELIMIT_BACKEND", "secondary")])
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert_names(&message, "RATELIMIT_BACKEND", "secondary");
    assert!(
        message.contains("primary_redis"),
        "lists the configured: {message}"
    );
}

fn env_error(name: &str, value: &str) -> String {
    match Config::from_env_vars([(name, value)]) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn env_on_backend_error_invalid() {
    let message = env_error("RATELIMIT_ON_BACKEND_ERROR", "maybe");
    assert_names(&message, "RATELIMIT_ON_BACKEND_ERROR", "maybe");
    assert!(message.contains("\"allow\" or \"deny\""), "{message}");
}

#[test]
fn env_trusted_proxies_invalid_entry() {
    let message = env_error("RATELIMIT_TRUSTED_PROXIES", "10.0.0.0/8,not-a-network");
    assert_names(&message, "RATELIMIT_TRUSTED_PROXIES", "not-a-network");
}

#[test]
fn env_client_ip_header_unknown_lists_the_valid_headers() {
    let message = env_error("RATELIMIT_CLIENT_IP_HEADER", "X-Client-IP");
    assert_names(&message, "RATELIMIT_CLIENT_IP_HEADER", "X-Client-IP");
    for header in ClientIpHeader::ALL {
        assert!(message.contains(header.name()), "{message}");
    }
}

#[test]
fn env_trusted_proxies_ipv4_mapped_entries_are_ipv4_networks() {
    let config = Config::from_env_vars([(
        "RATELIMIT_TRUSTED_PROXIES",
        "::ffff:10.0.0.0/104,::ffff:192.0.2.1",
    )])
    .unwrap_or_else(|error| panic!("{error}"));
    let proxies: Vec<String> = config
        .trusted_proxies()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "192.0.2.1/32"]);
}

#[test]
fn env_redis_url_invalid() {
    let message = env_error("RATELIMIT_REDIS_URL", "http://127.0.0.1:6379");
    assert_names(&message, "RATELIMIT_REDIS_URL", "http://127.0.0.1:6379");
}

#[test]
fn env_database_url_invalid_masks_the_password() {
    let message = env_error("RATELIMIT_DATABASE_URL", "oracle://scott:tiger@db/x");
    assert_names(
        &message,
        "RATELIMIT_DATABASE_URL",
        "oracle://scott:***@db/x",
    );
    assert!(!message.contains("tiger"), "{message}");
}

#[test]
fn env_backend_name_invalid() {
    let message = env_error("RATELIMIT_BACKEND", "two words");
    assert_names(&message, "RATELIMIT_BACKEND", "two words");
}

// ---- one test per invalid field ----

#[test]
fn toml_syntax_error() {
    let message = error_of("backend = \"redis");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn unknown_top_level_field() {
    let message = error_of("bakend = \"redis\"");
    assert_names(&message, "unknown field", "bakend");
}

#[test]
fn unknown_field_in_a_section_names_its_path() {
    let message = error_of("[circuit_breaker]\nfailure_treshold = 5");
    assert_names(&message, "circuit_breaker", "failure_treshold");
    let message = error_of("[middleware]\ndefault_rates = \"1/s\"");
    assert_names(&message, "middleware", "default_rates");
    let message = error_of("[[backends]]\nname = \"a\"\ntype = \"memory\"\nport = 1");
    assert_names(&message, "backends", "port");
}

#[test]
fn wrong_type_names_the_field_the_line_and_the_type_never_the_value() {
    let message = error_of("[circuit_breaker]\nfailure_threshold = \"5\"");
    assert_names(&message, "circuit_breaker.failure_threshold", "line 2");
    assert!(message.contains("string"), "{message}");
    assert!(message.contains("a whole number"), "{message}");
    assert!(!message.contains("\"5\""), "{message}");
    let message = error_of("[circuit_breaker]\nrecovery_timeout = 60");
    assert_names(&message, "circuit_breaker.recovery_timeout", "line 2");
    assert!(message.contains("integer"), "{message}");
    let message = error_of("trusted_proxies = \"10.0.0.0/8\"");
    assert_names(&message, "trusted_proxies", "line 1");
    assert!(!message.contains("10.0.0.0/8"), "{message}");
}

#[test]
fn backend_unknown() {
    let message = error_of("backend = \"memcached\"");
    assert_names(&message, "`backend`", "memcached");
    assert!(message.contains("configured backends: memory"), "{message}");
}

#[test]
fn backend_redis_without_a_url() {
    let message = error_of("backend = \"redis\"");
    assert_names(&message, "`backend`", "\"redis\"");
    assert!(
        message.contains("[redis] url"),
        "says how to fix: {message}"
    );
}

#[test]
fn backend_database_without_a_url() {
    let message = error_of("backend = \"database\"");
    assert_names(&message, "`backend`", "\"database\"");
    assert!(message.contains("RATELIMIT_DATABASE_URL"), "{message}");
}

#[test]
fn backend_multi_without_a_multi_section() {
    let message = error_of("backend = \"multi\"");
    assert_names(&message, "`backend`", "\"multi\"");
}

#[test]
fn backend_invalid_name() {
    let message = error_of("backend = \"\"");
    assert_names(&message, "`backend`", "\"\"");
}

#[test]
fn on_backend_error_invalid() {
    let message = error_of("on_backend_error = \"ignore\"");
    assert_names(&message, "on_backend_error", "ignore");
    assert!(message.contains("\"allow\" or \"deny\""), "{message}");
}

#[test]
fn trusted_proxies_invalid_entry() {
    let message = error_of("trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]");
    assert_names(&message, "trusted_proxies[1]", "10.0.0.0/33");
}

#[test]
fn client_ip_header_names_parse_in_any_case() {
    for header in ClientIpHeader::ALL {
        for spelling in [
            header.name().to_owned(),
            header.name().to_lowercase(),
            header.name().to_uppercase(),
        ] {
            let config = parse(&format!("client_ip_header = \"{spelling}\""));
            assert_eq!(config.client_ip_header(), header, "{spelling}");
        }
    }
}

#[test]
fn client_ip_header_unknown_lists_the_valid_headers() {
    let message = error_of("client_ip_header = \"X-Client-IP\"");
    assert_names(&message, "client_ip_header", "X-Client-IP");
    for header in ClientIpHeader::ALL {
        assert!(message.contains(header.name()), "{message}");
    }
}

#[test]
fn trusted_proxies_ipv4_mapped_entries_are_ipv4_networks() {
    let config = parse("trusted_proxies = [\"::ffff:203.0.113.0/120\", \"10.0.0.0/8\"]");
    let proxies: Vec<String> = config
        .trusted_proxies()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["203.0.113.0/24", "10.0.0.0/8"]);
}

#[test]
fn ipv6_prefix_out_of_range() {
    let message = error_of("ipv6_prefix = 129");
    assert_names(&message, "ipv6_prefix", "129");
    assert!(message.contains("0 to 128"), "{message}");
    let message = error_of("ipv6_prefix = -1");
    assert_names(&message, "ipv6_prefix", "-1");
}

#[test]
fn redis_url_invalid() {
    let message = error_of("[redis]\nurl = \"localhost:6379\"");
    assert_names(&message, "redis.url", "localhost:6379");
    assert!(message.contains("redis://"), "{message}");
}

#[test]
fn redis_section_without_url() {
    let message = error_of("[redis]\n");
    assert_names(&message, "redis", "url");
}

#[test]
fn database_url_invalid() {
    let message = error_of("[database]\nurl = \"oracle://scott:tiger@db/x\"");
    assert_names(&message, "database.url", "oracle://scott:***@db/x");
    assert!(
        !message.contains("tiger"),
        "the password is masked: {message}"
    );
}

#[test]
fn database_table_prefix_invalid() {
    let message = error_of("[database]\nurl = \"sqlite::memory:\"\ntable_prefix = \"Rate-Limit\"");
    assert_names(&message, "database.table_prefix", "Rate-Limit");
}

#[test]
fn backends_name_reserved() {
    let message = error_of("[[backends]]\nname = \"redis\"\ntype = \"redis\"\nurl = \"redis://h\"");
    assert_names(&message, "backends[0].name", "\"redis\"");
    assert!(message.contains("built-in"), "{message}");
}

#[test]
fn backends_name_duplicate() {
    let message = error_of(
        "[[backends]]\nname = \"a\"\ntype = \"memory\"\n[[backends]]\nname = \"a\"\ntype = \"memory\"",
    );
    assert_names(&message, "backends[1].name", "\"a\"");
}

#[test]
fn backends_name_invalid() {
    let message = error_of("[[backends]]\nname = \"a b\"\ntype = \"memory\"");
    assert_names(&message, "backends[0].name", "a b");
}

#[test]
fn backends_type_unknown() {
    let message = error_of("[[backends]]\nname = \"cache\"\ntype = \"memcached\"");
    assert_names(&message, "backends[0].type", "memcached");
    assert!(
        message.contains("\"memory\", \"redis\" or \"database\""),
        "{message}"
    );
}

#[test]
fn backends_url_missing() {
    let message = error_of("[[backends]]\nname = \"r\"\ntype = \"redis\"");
    assert_names(&message, "backends[0].type", "\"redis\"");
    assert!(message.contains("url"), "{message}");
}

#[test]
fn backends_url_invalid() {
    let message = error_of("[[backends]]\nname = \"d\"\ntype = \"database\"\nurl = \"redis://x\"");
    assert_names(&message, "backends[0].url", "redis://x");
}

#[test]
fn backends_url_on_memory() {
    let message = error_of("[[backends]]\nname = \"m\"\ntype = \"memory\"\nurl = \"redis://x\"");
    assert_names(&message, "backends[0].url", "memory");
}

#[test]
fn backends_table_prefix_on_redis() {
    let message = error_of(
        "[[backends]]\nname = \"r\"\ntype = \"redis\"\nurl = \"redis://x\"\ntable_prefix = \"t_\"",
    );
    assert_names(&message, "backends[0].type", "table_prefix");
}

#[test]
fn backends_table_prefix_invalid() {
    let message = error_of(
        "[[backends]]\nname = \"d\"\ntype = \"database\"\nurl = \"sqlite::memory:\"\ntable_prefix = \"1x\"",
    );
    assert_names(&message, "backends[0].table_prefix", "1x");
}

#[test]
fn multi_backends_empty() {
    let message = error_of("[multi]\nbackends = []");
    assert_names(&message, "multi.backends", "empty");
}

#[test]
fn multi_backends_unknown() {
    let message = error_of("[multi]\nbackends = [\"memory\", \"secondary\"]");
    assert_names(&message, "multi.backends[1]", "secondary");
    assert!(message.contains("configured backends: memory"), "{message}");
}

#[test]
fn multi_backends_names_itself() {
    let message = error_of("[multi]\nbackends = [\"multi\", \"memory\"]");
    assert_names(&message, "multi.backends[0]", "\"multi\"");
}

#[test]
fn multi_backends_duplicate() {
    let message = error_of("[multi]\nbackends = [\"memory\", \"memory\"]");
    assert_names(&message, "multi.backends[1]", "\"memory\"");
}

#[test]
fn multi_backends_redis_without_a_url() {
    let message = error_of("[multi]\nbackends = [\"redis\", \"memory\"]");
    assert_names(&message, "multi.backends[0]", "\"redis\"");
    assert!(message.contains("[redis] url"), "{message}");
}

#[test]
fn circuit_breaker_failure_threshold_zero() {
    let message = error_of("[circuit_breaker]\nfailure_threshold = 0");
    assert_names(&message, "circuit_breaker.failure_threshold", "= 0");
    assert!(message.contains(">= 1"), "{message}");
}

#[test]
fn circuit_breaker_recovery_timeout_without_unit() {
    let message = error_of("[circuit_breaker]\nrecovery_timeout = \"60\"");
    assert_names(&message, "circuit_breaker.recovery_timeout", "\"60\"");
    assert!(message.contains("unit is missing"), "{message}");
    assert!(
        message.contains("\"60s\""),
        "shows a valid value: {message}"
    );
}

#[test]
fn circuit_breaker_recovery_timeout_fractional() {
    let message = error_of("[circuit_breaker]\nrecovery_timeout = \"1.5s\"");
    assert_names(&message, "circuit_breaker.recovery_timeout", "1.5s");
}

#[test]
fn circuit_breaker_reset_timeout_unknown_unit() {
    let message = error_of("[circuit_breaker]\nreset_timeout = \"5 minutes\"");
    assert_names(&message, "circuit_breaker.reset_timeout", "5 minutes");
    assert!(message.contains("unit is unknown"), "{message}");
}

#[test]
fn circuit_breaker_reset_timeout_zero() {
    let message = error_of("[circuit_breaker]\nreset_timeout = \"0s\"");
    assert_names(&message, "circuit_breaker.reset_timeout", "0s");
}

#[test]
fn circuit_breaker_half_open_max_calls_zero() {
    let message = error_of("[circuit_breaker]\nhalf_open_max_calls = 0");
    assert_names(&message, "circuit_breaker.half_open_max_calls", "0");
}

#[test]
fn circuit_breaker_backoff_multiplier_below_one() {
    let message = error_of("[circuit_breaker]\nbackoff_multiplier = 0.5");
    assert_names(&message, "circuit_breaker.backoff_multiplier", "0.5");
    let message = error_of("[circuit_breaker]\nbackoff_multiplier = nan");
    assert_names(&message, "circuit_breaker.backoff_multiplier", "NaN");
}

#[test]
fn circuit_breaker_backoff_max_invalid() {
    let message = error_of("[circuit_breaker]\nbackoff_max = \"5M\"");
    assert_names(&message, "circuit_breaker.backoff_max", "5M");
}

#[test]
fn circuit_breaker_backoff_max_shorter_than_recovery() {
    let message = error_of("[circuit_breaker]\nrecovery_timeout = \"60s\"\nbackoff_max = \"30s\"");
    assert_names(&message, "circuit_breaker.backoff_max", "30s");
    let message = error_of("[circuit_breaker]\nrecovery_timeout = \"10m\"");
    assert_names(&message, "circuit_breaker.recovery_timeout", "10m");
}

#[test]
fn middleware_default_rate_invalid() {
    let message = error_of("[middleware]\ndefault_rate = \"5/M\"");
    assert_names(&message, "middleware.default_rate", "5/M");
    assert!(message.contains("lower case"), "{message}");
}

#[test]
fn middleware_rate_limits_rate_invalid() {
    let message = error_of("[middleware.rate_limits]\n\"/api/\" = \"100/x\"");
    assert_names(&message, "middleware.rate_limits.\"/api/\"", "100/x");
    assert!(message.contains("unknown period unit"), "{message}");
}

#[test]
fn middleware_rate_limits_prefix_without_slash() {
    let message = error_of("[middleware.rate_limits]\n\"api/\" = \"100/h\"");
    assert_names(&message, "middleware.rate_limits.\"api/\"", "api/");
    assert!(message.contains("start with `/`"), "{message}");
}

#[test]
fn middleware_skip_paths_without_slash() {
    let message = error_of("[middleware]\nskip_paths = [\"/ok\", \"health\"]");
    assert_names(&message, "middleware.skip_paths[1]", "health");
}

#[test]
fn middleware_algorithm_unknown() {
    let message = error_of("[middleware]\nalgorithm = \"gcra\"");
    assert_names(&message, "middleware.algorithm", "gcra");
    assert!(message.contains("token_bucket"), "{message}");
}

#[test]
fn middleware_backend_unknown() {
    let message = error_of("[middleware]\nbackend = \"edge\"");
    assert_names(&message, "middleware.backend", "edge");
}

// ---- registries from configs ----

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("{error}"))
        .block_on(future)
}

/// A backend that has not connected: unhealthy, and its detail says so.
#[cfg(any(feature = "redis", feature = "sqlite"))]
fn assert_not_connected(health: &ratelimit_core::HealthStatus) {
    assert!(!health.healthy);
    assert!(
        health
            .detail
            .as_deref()
            .is_some_and(|detail| detail.contains("not connected")),
        "{health:?}"
    );
}

/// A loopback port nobody listens on (bound, then released).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn the_zero_configuration_builds_the_zero_configuration_registry() {
    let registry = block_on(Registry::from_config(&Config::default()))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(registry.backend_names().collect::<Vec<_>>(), ["memory"]);
    assert_eq!(registry.default_backend_name(), "memory");
}

#[test]
fn registry_policies_come_from_the_config() {
    let config = parse(
        r#"
        backend = "local"
        on_backend_error = "deny"
        trusted_proxies = ["10.0.0.0/8", "192.0.2.1"]
        client_ip_header = "x-real-ip"
        ipv6_prefix = 56
        [[backends]]
        name = "local"
        type = "memory"
        [multi]
        backends = ["local", "memory"]
        "#,
    );
    let registry =
        block_on(Registry::from_config(&config)).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        registry.backend_names().collect::<Vec<_>>(),
        ["memory", "local", "multi"]
    );
    assert_eq!(registry.default_backend_name(), "local");
    assert_eq!(registry.on_backend_error(), OnError::Deny);
    assert_eq!(registry.trusted_proxies().len(), 2);
    assert_eq!(registry.client_ip_header(), ClientIpHeader::XRealIp);
    assert_eq!(registry.ipv6_prefix(), 56);
    let multi = registry.backend("multi").map(|b| b.health_status());
    let members: Vec<String> = multi
        .map(|status| status.members.into_iter().map(|m| m.name).collect())
        .unwrap_or_default();
    assert_eq!(members, ["local", "memory"]);
}

#[test]
fn a_builder_from_config_takes_more_backends() {
    let config = parse("backend = \"memory\"");
    let registry = block_on(Registry::builder_from_config(&config))
        .unwrap_or_else(|error| panic!("{error}"))
        .backend("extra", ratelimit_core::MemoryBackend::new())
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        registry.backend_names().collect::<Vec<_>>(),
        ["memory", "extra"]
    );
    assert_eq!(registry.default_backend_name(), "memory");
}

#[test]
fn failover_members_share_state_with_their_named_backends() {
    let config = parse("[multi]\nbackends = [\"memory\"]");
    block_on(async {
        let registry = Registry::from_config(&config)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let limit = Limit::fixed_window(rate("1/m"));
        let via_multi = registry.backend("multi").map(|b| b.check("k", &limit));
        let Some(check) = via_multi else {
            panic!("no multi backend")
        };
        assert!(check.await.is_ok_and(|d| d.allowed));
        let Some(memory) = registry.backend("memory") else {
            panic!("no memory backend")
        };
        let direct = memory.peek("k", &limit).await;
        assert!(direct.is_ok_and(|d| !d.allowed), "the count is shared");
    });
}

#[cfg(feature = "redis")]
#[test]
fn a_redis_that_does_not_answer_fails_the_build_naming_the_backend() {
    let url = format!("redis://127.0.0.1:{}", dead_port());
    let config = parse(&format!("backend = \"redis\"\n[redis]\nurl = \"{url}\""));
    let error = block_on(Registry::from_config(&config)).err();
    let message = error.map(|error| error.to_string()).unwrap_or_default();
    assert_names(&message, "backend `redis`", &url);
}

#[cfg(feature = "redis")]
#[test]
fn a_dead_failover_member_is_skipped_and_reported_unhealthy() {
    let url = format!("redis://127.0.0.1:{}", dead_port());
    let config = parse(&format!(
        "backend = \"multi\"\n[redis]\nurl = \"{url}\"\n[multi]\nbackends = [\"redis\", \"memory\"]"
    ));
    block_on(async {
        let registry = Registry::from_config(&config)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let limit = Limit::fixed_window(rate("5/m"));
        let decision = registry.default_backend().check("k", &limit).await;
        assert!(decision.is_ok_and(|d| d.allowed), "memory serves");
        let Some(redis) = registry.backend("redis") else {
            panic!("no redis backend")
        };
        assert_not_connected(&redis.health().await);
        let multi = registry.default_backend().health().await;
        assert!(multi.healthy, "memory can still serve");
        assert!(
            multi
                .members
                .iter()
                .any(|member| member.name == "redis" && !member.status.healthy)
        );
    });
}

/// A `redis-server` on `port`, stopped when dropped.
#[cfg(feature = "redis")]
struct RedisProcess(std::process::Child);

#[cfg(feature = "redis")]
impl RedisProcess {
    /// `None` when `redis-server` cannot be started (the test is then skipped, unless
    /// RATELIMIT_REQUIRE_SERVICES=1).
    fn start(port: u16) -> Option<Self> {
        let started = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn();
        match started {
            Ok(child) => Some(Self(child)),
            Err(error) if std::env::var("RATELIMIT_REQUIRE_SERVICES").as_deref() == Ok("1") => {
                panic!("cannot start redis-server: {error}")
            }
            Err(_) => None,
        }
    }
}

#[cfg(feature = "redis")]
impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(feature = "redis")]
#[test]
fn a_failover_member_down_at_startup_is_used_once_its_server_is_up() {
    let port = dead_port();
    let config = parse(&format!(
        r#"
        backend = "multi"
        key_prefix = "config-test-late:{}:"
        [redis]
        url = "redis://127.0.0.1:{port}"
        [multi]
        backends = ["redis", "memory"]
        [circuit_breaker]
        failure_threshold = 1
        recovery_timeout = "100ms"
        backoff_max = "100ms"
        "#,
        std::process::id()
    ));
    block_on(async {
        let registry = Registry::from_config(&config)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let limit = Limit::fixed_window(rate("10/m"));
        let multi = registry.default_backend();
        assert!(multi.check("early", &limit).await.is_ok_and(|d| d.allowed));
        let Some(redis) = registry.backend("redis") else {
            panic!("no redis backend")
        };
        assert!(!redis.health_status().healthy);

        let Some(_server) = RedisProcess::start(port) else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !redis.health().await.healthy {
            assert!(
                std::time::Instant::now() < deadline,
                "redis never connected: {:?}",
                redis.health_status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The circuit lets a trial through after 100ms; from then on Redis serves again.
        tokio::time::sleep(Duration::from_millis(150)).await;
        for _ in 0..3 {
            assert!(multi.check("late", &limit).await.is_ok_and(|d| d.allowed));
        }
        let counted_in_redis = redis.peek("late", &limit).await;
        assert!(
            counted_in_redis.is_ok_and(|d| d.remaining < 9),
            "the primary counts again"
        );
    });
}

#[cfg(feature = "redis")]
#[test]
fn connect_on_first_use_never_fails_the_build() {
    let url = format!("redis://127.0.0.1:{}", dead_port());
    let config = parse(&format!("backend = \"redis\"\n[redis]\nurl = \"{url}\""));
    block_on(async {
        let registry = Registry::from_config_with(&config, ConnectPolicy::OnFirstUse)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let limit = Limit::fixed_window(rate("5/m"));
        assert!(registry.default_backend().check("k", &limit).await.is_err());
        assert!(!registry.default_backend().health().await.healthy);
    });
}

#[cfg(feature = "redis")]
#[test]
#[allow(clippy::print_stderr, reason = "a skipped test says why")]
fn a_live_redis_counts_under_the_configured_key_prefix() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!(
        "config-test:{}:{:?}:",
        std::process::id(),
        std::time::Instant::now()
    );
    let config = parse(&format!(
        "backend = \"redis\"\nkey_prefix = \"{prefix}\"\n[redis]\nurl = \"{url}\""
    ));
    block_on(async {
        let registry = match Registry::from_config(&config).await {
            Ok(registry) => registry,
            Err(error) if std::env::var("RATELIMIT_REQUIRE_SERVICES").as_deref() != Ok("1") => {
                eprintln!("SKIPPED: no Redis at {url}: {error}");
                return;
            }
            Err(error) => panic!("{error}"),
        };
        let limit = Limit::fixed_window(rate("1/m"));
        let redis = registry.default_backend();
        assert!(redis.check("k", &limit).await.is_ok_and(|d| d.allowed));
        assert!(redis.check("k", &limit).await.is_ok_and(|d| !d.allowed));
        assert!(redis.reset("k").await.is_ok());
        assert!(redis.health().await.healthy);
    });
}

#[cfg(feature = "sqlite")]
#[test]
fn a_database_backend_uses_the_configured_table_prefix() {
    let config = parse(
        "backend = \"database\"\n[database]\nurl = \"sqlite::memory:\"\ntable_prefix = \"cfg_\"",
    );
    block_on(async {
        let registry = Registry::from_config(&config)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let limit = Limit::fixed_window(rate("1/m"));
        let sql = registry.default_backend();
        assert!(sql.check("k", &limit).await.is_ok_and(|d| d.allowed));
        assert!(sql.check("k", &limit).await.is_ok_and(|d| !d.allowed));
        assert_eq!(sql.health().await.backend, "sqlite");
    });
}

/// A database that cannot be opened when the registry is built (here: a SQLite file whose
/// folder does not exist yet) fails each call with the reason and is reported unhealthy; once
/// it can be opened, the next call connects and the store serves from then on.
#[cfg(feature = "sqlite")]
#[test]
fn a_database_that_comes_up_after_the_build_is_used_from_then_on() {
    let folder = std::env::temp_dir().join(format!(
        "ratelimit-late-db-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    ));
    let url = format!("sqlite://{}", folder.join("late.sqlite3").display());
    let config = parse(&format!(
        "backend = \"database\"\n[database]\nurl = \"{url}\""
    ));
    block_on(async {
        let registry = Registry::from_config_with(&config, ConnectPolicy::OnFirstUse)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let sql = registry.default_backend();
        let limit = Limit::fixed_window(rate("1/m"));
        assert!(
            sql.check("k", &limit).await.is_err(),
            "no folder, no database"
        );
        assert_not_connected(&sql.health().await);
        std::fs::create_dir_all(&folder).unwrap_or_else(|error| panic!("{error}"));
        assert!(sql.check("k", &limit).await.is_ok_and(|d| d.allowed));
        assert!(sql.check("k", &limit).await.is_ok_and(|d| !d.allowed));
        assert!(sql.health().await.healthy);
    });
    let _ = std::fs::remove_dir_all(&folder);
}

#[cfg(not(feature = "redis"))]
#[test]
fn a_redis_backend_without_the_feature_names_the_feature() {
    let config = parse("[redis]\nurl = \"redis://127.0.0.1:6379\"");
    let message = block_on(Registry::from_config(&config))
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert_names(&message, "redis.url", "redis feature");
}

#[test]
fn config_errors_are_typed() {
    assert!(matches!(
        Config::from_toml_str("ipv6_prefix = 200"),
        Err(ConfigError::OutOfRange { .. })
    ));
    assert!(matches!(
        Config::from_toml_str("[middleware]\ndefault_rate = \"x\""),
        Err(ConfigError::InvalidRate { .. })
    ));
    assert!(matches!(
        Config::from_toml_str("nope = 1"),
        Err(ConfigError::Syntax { .. })
    ));
}

// ---- credentials never reach a message ----

/// The secrets in [`SECRET_URLS`].
const SECRETS: [&str; 2] = ["s3cr3t", "hunter2"];

/// One URL per way of writing a credential: a password holding `#`, `/`, `?` or `@`, and the
/// `password`, `pass`, `token`, `auth`, `secret` and `sslpassword` parameters in any case.
/// With the section whose URL it is.
const SECRET_URLS: [(&str, &str); 7] = [
    (
        "database",
        "postgres://u:s3cr3t#/?x@db.example:5432/app?password=hunter2",
    ),
    (
        "database",
        "postgres://app@db.example/app?sslmode=require&SSLPassword=hunter2",
    ),
    ("database", "postgresql://db.example/app?PASSWORD=hunter2"),
    (
        "database",
        "mysql://u:s3cr3t@x/y?z@db.example/app?Token=hunter2",
    ),
    ("redis", "redis://:s3cr3t@@db.example:6379/0?auth=hunter2"),
    (
        "redis",
        "redis+unix:///run/redis.sock?db=1&pass=hunter2&secret=s3cr3t",
    ),
    ("redis", "rediss://user:s3cr3t%40@db.example?Pass=hunter2#x"),
];

fn assert_no_secret(shown: &str) {
    for secret in SECRETS {
        assert!(!shown.contains(secret), "{secret} shown in: {shown}");
    }
}

#[test]
fn url_credentials_never_reach_debug_output_or_errors() {
    for (section, url) in SECRET_URLS {
        let config = parse(&format!("[{section}]\nurl = \"{url}\""));
        let debug = format!("{config:?}");
        assert_no_secret(&debug);
        assert!(debug.contains("***"), "{debug}");

        // A scheme the backend does not speak: the error shows the URL, masked.
        let message = error_of(&format!("[{section}]\nurl = \"x{url}\""));
        assert_names(&message, &format!("{section}.url"), "***");
        assert_no_secret(&message);
        let var = if section == "redis" {
            "RATELIMIT_REDIS_URL"
        } else {
            "RATELIMIT_DATABASE_URL"
        };
        let message = env_error(var, &format!("x{url}"));
        assert_no_secret(&message);

        // A URL pasted into a field that takes something else.
        for text in [
            format!("backend = \"{url}\""),
            format!("on_backend_error = \"{url}\""),
            format!("[[backends]]\nname = \"a\"\ntype = \"{url}\""),
            format!("[circuit_breaker]\nrecovery_timeout = \"{url}\""),
            format!("ipv6_prefix = \"{url}\""),
            format!("[middleware]\nskip_paths = [\"{url}\"]"),
        ] {
            assert_no_secret(&error_of(&text));
        }
    }
}

#[test]
fn a_toml_syntax_error_names_the_line_never_the_text_on_it() {
    for (text, line) in [
        // An unclosed string: the parser would quote the rest of the line.
        (
            "backend = \"memory\"\n[database]\nurl = \"postgres://u:s3cr3t@db/app?password=hunter2\n",
            "line 3",
        ),
        // No quotes at all.
        (
            "[database]\nurl = postgres://u:s3cr3t@db/app?password=hunter2\n",
            "line 2",
        ),
        // Text after the value.
        (
            "[redis]\nurl = \"redis://h\" password = \"hunter2\" # s3cr3t\n",
            "line 2",
        ),
        // The same key twice.
        (
            "[redis]\nurl = \"redis://:s3cr3t@h\"\nurl = \"redis://:hunter2@h\"\n",
            "line 3",
        ),
    ] {
        let message = error_of(text);
        assert_no_secret(&message);
        assert!(message.contains(line), "{line} missing from: {message}");
        assert!(!message.contains('|'), "no excerpt: {message}");
    }

    let path = std::env::temp_dir().join(format!(
        "ratelimit-config-secret-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        "[database]\nurl = \"postgres://u:s3cr3t@db/app?password=hunter2\n",
    )
    .unwrap_or_else(|error| panic!("{error}"));
    let error = Config::from_toml_file(&path).err();
    let _ = std::fs::remove_file(&path);
    let message = error.map(|error| error.to_string()).unwrap_or_default();
    assert_names(&message, &path.display().to_string(), "line 2");
    assert_no_secret(&message);
    assert_no_secret(&format!(
        "{error:?}",
        error = Config::from_toml_str("url = \"hunter2")
    ));
}

#[cfg(all(feature = "redis", feature = "postgres"))]
#[test]
fn a_backend_that_cannot_connect_is_named_without_its_credentials() {
    let port = dead_port();
    for (kind, url) in [
        (
            "database",
            format!("postgres://u:s3cr3t#@127.0.0.1:{port}/app?password=hunter2"),
        ),
        (
            "redis",
            format!("redis://:s3cr3t@127.0.0.1:{port}/0?token=hunter2"),
        ),
    ] {
        let config = parse(&format!("backend = \"{kind}\"\n[{kind}]\nurl = \"{url}\""));
        let message = block_on(Registry::from_config(&config))
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert_names(&message, &format!("backend `{kind}`"), "127.0.0.1");
        assert_no_secret(&message);
    }
}
