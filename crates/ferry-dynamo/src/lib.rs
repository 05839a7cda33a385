//! Ferry's DynamoDB side (docs/design.md section 7): the user's single table as the cloud replica.
//!
//! - [`Table`]: create or check the table from the schema, and its [`Settings`].
//! - [`Writer`]: conditional puts of changes, with Ferry's hidden attributes.
//! - [`DynamoTransport`]: the direct transport a device or service syncs through.
//! - [`Follower`]: adopts what plain SDK and OneTable writers put in the table.
//! - [`CloudReplica`]: cloud mode, the table read and written as a replica of its own.
//!
//! Architecture invariant: this is the only crate that links the AWS SDK, so a device
//! build without it carries none of it.

mod attrs;
mod client;
mod clock;
mod error;
mod follower;
pub mod layout;
mod replica;
mod table;
mod transport;
mod writer;

pub use attrs::{AttrMap, from_attrs, to_attrs};
/// The AWS SDK this crate is built on, for callers that read the table themselves.
pub use aws_sdk_dynamodb as sdk;
pub use client::{Dynamo, Endpoint};
pub use clock::ServerClock;
pub use error::{Error, Failure, FailureKind, Result};
pub use ferry_service::{CloudFind, Found};
pub use follower::{Adopted, Follower};
pub use layout::Layout;
pub use replica::{CloudReplica, DynamoRows};
pub use table::{HORIZON_MS_DEFAULT, Settings, Stream, Table, WINDOW_MS_DEFAULT};
pub use transport::DynamoTransport;
pub use writer::Writer;
