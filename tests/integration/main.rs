//! Ferry's integration tests, from the user's side: the library, the real `ferry` binary,
//! crash safety with a real process, and the dependency rules.

// A test fails by panicking, helpers included: clippy's `allow-unwrap-in-tests` covers only
// `#[test]` functions, not the helpers of an integration-test binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod crash;
mod dynamo;
mod dynamo_cli;
mod ioto;
mod operations;
mod relay;
mod relay_cli;
mod support;
mod sync;
mod sync_crash;
mod sync_regressions;
mod tidy;
mod transports;
mod triggers;
