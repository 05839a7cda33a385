//! Ferry's data model: the DynamoDB attribute-value model ([`Value`]), items, keys,
//! DynamoDB's size limits, the JSON mapping and replication versions ([`Version`]).
//!
//! Architecture invariant: this crate is pure data. It performs no I/O and knows nothing
//! of schemas or storage.

pub mod codec;
mod durability;
mod error;
pub mod json;
pub mod keycode;
mod layout;
pub mod limits;
mod number;
pub mod size;
pub mod table;
mod value;
pub mod version;
mod view;

pub use durability::Durability;
pub use error::{Error, Result};
pub use layout::ItemLayout;
pub use number::Number;
pub use size::item_size;
pub use value::{Item, Key, KeyMap, KeySet, PathPart, Value};
pub use version::{Hlc, HlcClock, Observed, ReplicaId, SyncDirection, Version};
pub use view::{ItemRef, ValueRef};
