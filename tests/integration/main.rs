//! Ferry's integration tests, from the user's side: the library, the real `ferry` binary,
//! crash safety with a real process, and the dependency rules.

// A test fails by panicking, helpers included: clippy's `allow-unwrap-in-tests` covers only
// `#[test]` functions, not the helpers of an integration-test binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Runs each named test function (taking a [`dynamo::Via`]) over both transports: as
/// `over_dynamodb::NAME` and `over_relay::NAME` in the module that calls it.
macro_rules! over_both_transports {
    ($($test:ident),* $(,)?) => {
        mod over_dynamodb {
            $( #[test] fn $test() { super::$test(crate::dynamo::Via::Dynamo) } )*
        }
        mod over_relay {
            $( #[test] fn $test() { super::$test(crate::dynamo::Via::Relay) } )*
        }
    };
}

mod attacks;
mod cli;
mod contract;
mod crash;
mod dynamo;
mod dynamo_cli;
mod ioto;
mod operations;
mod relay;
mod support;
mod sync;
mod sync_crash;
mod sync_regressions;
mod tidy;
mod transports;
mod triggers;
