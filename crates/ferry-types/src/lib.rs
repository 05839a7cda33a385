//! Ferry's data model: the DynamoDB attribute-value model ([`Value`]), items, keys,
//! DynamoDB's size limits and the JSON mapping.
//!
//! Architecture invariant: this crate is pure data. It performs no I/O, knows nothing
//! of schemas or storage, and depends only on serde.

pub mod codec;
mod error;
pub mod json;
pub mod keycode;
pub mod limits;
mod number;
pub mod size;
mod value;

pub use error::{Error, Result};
pub use number::Number;
pub use size::item_size;
pub use value::{Item, Key, PathPart, Value};
