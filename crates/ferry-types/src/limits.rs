//! DynamoDB's limits, enforced on write (never by truncating on load).

/// Largest item, names and values included. Source: DynamoDB.
pub const ITEM_BYTES_MAX: usize = 400 * 1024;
/// Largest partition key value. Source: DynamoDB.
pub const HASH_KEY_BYTES_MAX: usize = 2048;
/// Largest sort key value. Source: DynamoDB.
pub const SORT_KEY_BYTES_MAX: usize = 1024;
/// Deepest nesting of maps and lists. Source: DynamoDB.
pub const NESTING_DEPTH_MAX: usize = 32;
/// Items in one transaction. Source: DynamoDB (TransactWriteItems).
pub const TRANSACTION_ITEMS_MAX: usize = 100;
