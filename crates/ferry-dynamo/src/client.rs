//! The SDK client as Ferry uses it: region and credentials the usual AWS ways, an optional
//! endpoint for local servers, the `Date` observer, and no SDK retries (a retried
//! replicated write needs a fresh `_seq`, so Ferry retries itself).

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;

use crate::clock::{DateObserver, ServerClock};

/// The region used with an endpoint when none is configured (local servers ignore it).
const LOCAL_REGION: &str = "us-east-1";
/// How long one attempt may take before it is abandoned: under W/2 of the default window,
/// so an abandoned write lands, if ever, while readers still look (docs/design.md section 7 rule 1).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the table is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// An endpoint URL (DynamoDB Local, say); `None`: AWS's.
    pub url: Option<String>,
    /// The region; `None`: the environment's or profile's.
    pub region: Option<String>,
}

/// A DynamoDB client and the clock its responses discipline.
#[derive(Debug, Clone)]
pub struct Dynamo {
    /// The SDK client (cheap to clone; connections are pooled and kept alive).
    pub client: Client,
    /// The server's time as its responses tell it.
    pub clock: Arc<ServerClock>,
    /// The AWS configuration it was built from (region and endpoint settled), for the
    /// other clients of the same table (its stream).
    pub shared: aws_config::SdkConfig,
}

impl Dynamo {
    /// Loads the AWS configuration (environment, profile) and builds the client. Use it on
    /// the runtime that will run its calls (its pooled connections live there).
    pub async fn connect(endpoint: &Endpoint) -> Dynamo {
        Dynamo::connect_with_clock(endpoint, Arc::new(ServerClock::default())).await
    }

    /// [`Dynamo::connect`] with a clock of the caller's.
    pub async fn connect_with_clock(endpoint: &Endpoint, clock: Arc<ServerClock>) -> Dynamo {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &endpoint.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &endpoint.url {
            loader = loader.endpoint_url(url);
        }
        let mut shared = loader.load().await;
        if shared.region().is_none() && endpoint.url.is_some() {
            shared = shared
                .to_builder()
                .region(Region::new(LOCAL_REGION))
                .build();
        }
        let config = aws_sdk_dynamodb::config::Builder::from(&shared);
        let timeouts = TimeoutConfig::builder()
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build();
        let config = config
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts)
            .interceptor(DateObserver(clock.clone()))
            .build();
        Dynamo {
            client: Client::from_conf(config),
            clock,
            shared,
        }
    }
}
