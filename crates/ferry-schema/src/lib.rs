//! ferry-schema
