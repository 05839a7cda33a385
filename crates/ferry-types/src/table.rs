//! The shape of a DynamoDB table as the store and the cloud see it: its indexes, what
//! each projects, and the conditions a query puts on a sort key. A OneTable schema names
//! them (`ferry-schema` loads and checks them); nothing here knows OneTable.

use crate::Value;

/// One index of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// `primary` or the secondary index's name.
    pub name: String,
    /// The partition key attribute.
    pub hash: String,
    /// The sort key attribute, if any.
    pub sort: Option<String>,
    /// Primary, global or local.
    pub kind: IndexKind,
    /// Which attributes a secondary index holds (`All` for the primary index).
    pub project: Projection,
}

/// What kind of index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// The table's primary key.
    Primary,
    /// A global secondary index (its own hash key).
    Global,
    /// A local secondary index (the primary hash key, another sort key).
    Local,
}

/// The attributes a secondary index holds besides the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projection {
    /// Every attribute.
    All,
    /// Only the index keys and the primary keys.
    Keys,
    /// These attributes (key attributes excluded: keys are always projected).
    Attrs(Vec<String>),
}

impl Index {
    /// The key attributes: hash, then sort if any.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.hash.as_str()).chain(self.sort.as_deref())
    }
}

/// A condition on the sort key of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortCondition {
    /// `=`
    Eq(Value),
    /// `<`
    Lt(Value),
    /// `<=`
    Le(Value),
    /// `>`
    Gt(Value),
    /// `>=`
    Ge(Value),
    /// `BETWEEN a AND b` (inclusive).
    Between(Value, Value),
    /// `begins_with`
    BeginsWith(Value),
}
