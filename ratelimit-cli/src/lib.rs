//! The `ratelimit` operator CLI (health, cleanup, inspect, reset) lands with the CLI issue.
