//! OneTable schemas with Ferry's `control` section: loading and validating the schema
//! document, and turning user JSON into stored items and back.
//!
//! Architecture invariant: this crate performs no I/O except reading schema files (and
//! their `blend` parts); time and context come in as arguments.

mod coerce;
mod control;
pub mod crypt;
mod doc;
mod error;
pub mod expr;
mod field;
mod generate;
mod index;
mod model;
mod prepare;
mod schema;
mod template;

pub use control::{Control, Enable, SyncDirection};
pub use crypt::Crypto;
pub use error::{Error, FieldError, Result, validation_message};
pub use ferry_types::Durability;
pub use field::{Field, FieldType, Generate, UID_LEN_MAX};
pub use index::{Index, IndexKind, LOCAL_INDEXES_MAX, Projection};
pub use model::Model;
pub use prepare::{Context, KeyQuery, PutMode, Reading, SortCondition, UpdateOps, properties};
pub use schema::{Params, Schema, Timestamps};
