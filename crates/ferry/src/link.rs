//! Transports an application attaches in a line:
//! `db.connect(ferry::relay(url, token), SyncOptions::default())` or
//! `db.connect(ferry::dynamodb(table), SyncOptions::default())`. A link becomes a transport
//! for the database it connects (a transport writes as its database's replica).

use crate::{Db, Result, SyncOptions};

/// Where a database syncs to; built into a transport when it connects
/// ([`crate::Attach::connect`]).
pub trait Link {
    /// Builds the transport for `db` and attaches it with `options`.
    fn attach_to(self, db: &Db, options: SyncOptions) -> Result<()>;
}

/// Ferry's relay at `url` (`ws://` or `wss://`), authenticated by a device `token`
/// (`ferry relay token`). TLS trusts the public web roots; add a private CA with
/// [`RelayLink::ca_file`].
#[cfg(feature = "ws")]
pub fn relay(url: &str, token: &str) -> RelayLink {
    RelayLink {
        url: url.to_string(),
        token: token.to_string(),
        ca_file: None,
    }
}

/// A relay to connect to ([`relay`]).
#[cfg(feature = "ws")]
#[derive(Debug, Clone)]
pub struct RelayLink {
    url: String,
    token: String,
    ca_file: Option<std::path::PathBuf>,
}

#[cfg(feature = "ws")]
impl RelayLink {
    /// Also trusts the certificates in the PEM file at `path` (a relay with a private CA).
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> RelayLink {
        self.ca_file = Some(path.into());
        self
    }
}

#[cfg(feature = "ws")]
impl Link for RelayLink {
    fn attach_to(self, db: &Db, options: SyncOptions) -> Result<()> {
        use crate::Attach;
        let invalid = |e: ferry_ws::ConfigError| crate::Error::Argument(e.to_string());
        let replica = db.status().replica;
        let mut transport =
            ferry_ws::WsTransport::new(&self.url, &self.token, &replica).map_err(invalid)?;
        if let Some(path) = &self.ca_file {
            transport = transport.with_ca_file(path).map_err(invalid)?;
        }
        db.attach(transport, options)
    }
}

/// The DynamoDB table `table` (created by `ferry table create`), reached with the usual
/// AWS configuration: credentials and region from the environment, the profile or the
/// instance's role. [`DynamoLink::endpoint`] and [`DynamoLink::region`] override them.
#[cfg(feature = "dynamo")]
pub fn dynamodb(table: &str) -> DynamoLink {
    DynamoLink {
        table: table.to_string(),
        endpoint: ferry_dynamo::Endpoint::default(),
    }
}

/// A DynamoDB table to connect to ([`dynamodb`]).
#[cfg(feature = "dynamo")]
#[derive(Debug, Clone)]
pub struct DynamoLink {
    table: String,
    endpoint: ferry_dynamo::Endpoint,
}

#[cfg(feature = "dynamo")]
impl DynamoLink {
    /// Another endpoint than AWS's (DynamoDB Local, say).
    pub fn endpoint(mut self, url: &str) -> DynamoLink {
        self.endpoint.url = Some(url.to_string());
        self
    }

    /// Another region than the configuration's.
    pub fn region(mut self, region: &str) -> DynamoLink {
        self.endpoint.region = Some(region.to_string());
        self
    }
}

#[cfg(feature = "dynamo")]
impl Link for DynamoLink {
    fn attach_to(self, db: &Db, options: SyncOptions) -> Result<()> {
        use crate::Attach;
        let replica = db.status().replica;
        let schema = std::sync::Arc::new(db.schema().clone());
        let transport =
            ferry_dynamo::DynamoTransport::new(self.endpoint, &self.table, schema, &replica);
        db.attach(transport, options)
    }
}
