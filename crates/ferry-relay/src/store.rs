//! The relay's backends of [`CloudStore`] (the seam's idea of a cloud, with the write rule
//! deciding every write): its own embedded store, or a DynamoDB table (feature `dynamo`).

pub mod embedded;

#[cfg(feature = "dynamo")]
pub mod dynamo;

pub use ferry_cloud::CloudStore;
