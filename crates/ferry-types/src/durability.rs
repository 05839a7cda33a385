//! How durable a commit is, as a schema's `control` section, a write's options and the
//! store all name it.

/// How durable a commit is when it returns.
/// Ordered: `Default < Immediate`, so the strictest of several wishes is their `max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Durability {
    /// In the OS at once (survives a process crash); fsynced by a background task within the
    /// store's sync window (survives a power loss after that window).
    #[default]
    Default,
    /// Fsynced before the commit returns.
    Immediate,
}
