//! The cloud's write rule: the one function that decides whether a change lands, on every
//! backend (the reference cloud, the relay's embedded store, DynamoDB). docs/sync.md,
//! "The cloud's write rule", states it for users.
//!
//! Given what the writer may write ([`Grant`]), what the schema says of each model
//! ([`Models`]), the cloud's time, the row the cloud holds for the key (or nothing) and the
//! incoming change, [`decide`] answers:
//!
//! 1. **Refused** when the change can never land as it is ([`Refusal`]): a put without an
//!    item, over DynamoDB's 400 KiB, or whose item names another model or key than the
//!    change; a model the cloud does not keep; a model the writer's role may not write (a
//!    device writes only models that upload, `up` or `both`; a service writes every model
//!    the cloud keeps); a version of another replica than the writer's own (when the
//!    writer's replica is known); a scope the writer may not write, the change's own or
//!    **the held row's** (moving a row out of a scope is a write to that scope too, and
//!    answering a stale write with the held row would read a scope the writer was not
//!    granted); a held row of another model; a key of a model devices download moving to
//!    another scope while the cloud holds its row, a tombstone included (its scope's
//!    devices would never hear of its end).
//! 2. **AlreadyThere** when the held row has this very version: a retry whose answer was
//!    lost. Nothing changes (the feed position stays), whatever the cloud's clock says now.
//! 3. **Refused as ahead** when the version is more than [`AHEAD_MAX_MS`] past the cloud's
//!    time (one bad clock would otherwise make the row unchangeable).
//! 4. **Superseded** when the held row is newer: the writer gets the held change.
//! 5. **Land** otherwise (no row, or an older one, a tombstone or not), with what it
//!    replaces.
//!
//! [`admit`] (1 without the held row) and [`bounded`] (3) need no held row; DynamoDB
//! checks them before its conditional `PutItem`, whose condition is [`against`]'s `Land`,
//! and runs [`against`] on the row a failed condition returns (`ALL_OLD`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ferry_journal::{Change, ChangeOp};
use ferry_types::limits::ITEM_BYTES_MAX;
use ferry_types::version::MAX_FORWARD_MS_DEFAULT;
use ferry_types::{ItemLayout, ReplicaId, SyncDirection, item_size};

use crate::transport::{PushOutcome, TransportError};

/// How far past the cloud's time a version may be: the bound a device's clock already puts
/// on remote stamps (`ferry_types::version::MAX_FORWARD_MS_DEFAULT`, one hour), so that a
/// clock the cloud accepts is one every device accepts too.
pub const AHEAD_MAX_MS: u64 = MAX_FORWARD_MS_DEFAULT;

/// Who writes to the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A device: writes the models devices upload.
    Device,
    /// A cloud service (cloud mode, a service token, the cloud's own writers): writes every
    /// model the cloud keeps (which of its writes come down is each device's direction
    /// rule: `down` and `both`).
    Service,
}

impl Role {
    /// Whether this role may write a model of `direction`.
    pub fn may_write(self, direction: SyncDirection) -> bool {
        match self {
            Role::Device => direction.uploads(),
            Role::Service => true,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Role::Device => "a device",
            Role::Service => "a service",
        }
    }
}

/// What one writer may write: its role and scopes (a token's claims, or credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Who it is, for messages (a device id, a service name).
    pub name: String,
    /// Device or service.
    pub role: Role,
    /// The scopes it may write and read; `None`: every scope (credentials that reach the
    /// whole table).
    pub scopes: Option<BTreeSet<String>>,
    /// The replica it writes as, when known (a relay session's): it writes only versions
    /// of its own, so it cannot pose as another writer's retry.
    pub replica: Option<ReplicaId>,
}

impl Grant {
    /// A device named `name`, granted `scopes` (`None`: every scope).
    pub fn device(name: &str, scopes: Option<BTreeSet<String>>) -> Grant {
        Grant {
            name: name.to_string(),
            role: Role::Device,
            scopes,
            replica: None,
        }
    }

    /// A cloud service named `name`, granted `scopes` (`None`: every scope).
    pub fn service(name: &str, scopes: Option<BTreeSet<String>>) -> Grant {
        Grant {
            name: name.to_string(),
            role: Role::Service,
            scopes,
            replica: None,
        }
    }

    /// The same grant, bound to the versions of `replica`.
    pub fn as_replica(mut self, replica: ReplicaId) -> Grant {
        self.replica = Some(replica);
        self
    }

    /// Whether it may write (and read) `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|scopes| scopes.contains(scope))
    }

    /// A pull of `scope` by this writer: `Rejected`, naming both, unless granted.
    pub fn may_read(&self, scope: &str) -> Result<(), TransportError> {
        match self.has_scope(scope) {
            true => Ok(()),
            false => Err(TransportError::Rejected(format!(
                "scope '{scope}' is not granted to '{}'",
                self.name
            ))),
        }
    }
}

/// What the cloud knows of the schema: each model it keeps and its direction (its
/// `control.sync`); a model only devices keep is not among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Models {
    directions: Option<BTreeMap<String, SyncDirection>>,
    /// Where items keep their model and key, to hold each put's item to its change.
    layout: Option<ItemLayout>,
}

impl Models {
    /// The models of a schema, their directions and its table's item layout.
    pub fn new(
        directions: impl IntoIterator<Item = (String, SyncDirection)>,
        layout: ItemLayout,
    ) -> Models {
        Models {
            directions: Some(directions.into_iter().collect()),
            layout: Some(layout),
        }
    }

    /// No schema: every model may be written by either role and items are not read (the
    /// reference cloud in unit tests only; every served backend has its schema).
    pub fn unchecked() -> Models {
        Models {
            directions: None,
            layout: None,
        }
    }

    /// The direction of `model`; `None` if the schema does not have it.
    pub fn direction(&self, model: &str) -> Option<SyncDirection> {
        match &self.directions {
            None => Some(SyncDirection::Both),
            Some(directions) => directions.get(model).copied(),
        }
    }
}

/// Why the cloud refuses a change for good: retrying it as it is cannot help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The change itself is wrong (a put without an item, an item over the size limit).
    Invalid(String),
    /// The cloud keeps no such model (not in the schema, or `enable: 'device'`).
    UnknownModel {
        /// The change's model.
        model: String,
    },
    /// The writer's role may not write the model.
    Direction {
        /// The change's model.
        model: String,
        /// Its direction.
        direction: SyncDirection,
        /// The writer's role.
        role: Role,
    },
    /// A version of another replica than the writer's own.
    Replica {
        /// The replica the version names.
        version_of: String,
    },
    /// The key holds a row of another model.
    HeldModel {
        /// The held row's model.
        model: String,
    },
    /// A scope the writer may not write: the change's, or the held row's.
    Scope {
        /// The scope not granted.
        scope: String,
        /// Whether it is the held row's (the change would take the row over).
        held: bool,
    },
    /// The change would move a key of a model devices download to another scope, while
    /// the cloud holds its row (a tombstone included, until the horizon): a key's changes
    /// are one row in one scope's feed, so the devices of its scope would never hear of
    /// its end. An item that changes hands takes a key of its new scope.
    Move {
        /// The held row's scope.
        from: String,
        /// The change's.
        to: String,
    },
    /// The version is too far past the cloud's time: an honest writer re-stamps at the
    /// cloud's time and writes again.
    Ahead {
        /// How far past the cloud's time the version is.
        ahead_ms: u64,
        /// The cloud's time when it refused.
        server_time_ms: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Invalid(reason) => f.write_str(reason),
            Refusal::UnknownModel { model } => {
                write!(
                    f,
                    "model {model} is not kept by the cloud (not in its schema, or device-only)"
                )
            }
            Refusal::Direction {
                model,
                direction,
                role,
            } => write!(
                f,
                "model {model} (sync: '{}') may not be written by {}: {}",
                direction.as_str(),
                role.as_str(),
                match role {
                    Role::Device => "devices write only models that upload ('up' or 'both')",
                    Role::Service => "services write every model the cloud keeps",
                }
            ),
            Refusal::Replica { version_of } => write!(
                f,
                "the version is replica {version_of}'s, not this writer's: a writer sends only its own versions"
            ),
            Refusal::HeldModel { model } => {
                write!(f, "the key holds a {model}, a model this change is not")
            }
            Refusal::Scope { scope, held: false } => {
                write!(f, "scope '{scope}' is not granted to this writer")
            }
            Refusal::Scope { scope, held: true } => write!(
                f,
                "the key belongs to scope '{scope}', which is not granted to this writer"
            ),
            Refusal::Move { from, to } => write!(
                f,
                "the key belongs to scope '{from}' and may not move to '{to}' while the cloud holds it, a tombstone included (the devices of '{from}' would never hear of its end): write the item under a key of its new scope"
            ),
            Refusal::Ahead { ahead_ms, .. } => write!(
                f,
                "the version is {ahead_ms} ms past the cloud's time (at most {AHEAD_MAX_MS} ms): the writer's clock is ahead"
            ),
        }
    }
}

impl Refusal {
    /// The answer a writer gets, naming the writer and the key.
    pub fn outcome(&self, grant: &Grant, change: &Change) -> PushOutcome {
        match self {
            Refusal::Ahead { server_time_ms, .. } => PushOutcome::Ahead {
                server_time_ms: *server_time_ms,
            },
            _ => PushOutcome::Rejected {
                reason: format!("{} refused for '{}': {self}", change.key, grant.name),
            },
        }
    }
}

/// What the cloud does with one incoming change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Write it; it replaces `replaced` (the held row, if any).
    Land {
        /// The row it replaces.
        replaced: Option<&'a Change>,
    },
    /// The held row is this very version: a retry whose answer was lost.
    AlreadyThere,
    /// The held row is newer: the writer gets it.
    Superseded {
        /// The held change.
        held: &'a Change,
    },
    /// Never, as it is.
    Refused(Refusal),
}

impl Decision<'_> {
    /// The answer a writer gets for a change that did not land by this decision (`None`
    /// for `Land`: the backend writes it and answers `Applied` once it has).
    pub fn outcome(&self, grant: &Grant, change: &Change) -> Option<PushOutcome> {
        match self {
            Decision::Land { .. } => None,
            Decision::AlreadyThere => Some(PushOutcome::Applied),
            Decision::Superseded { held } => Some(PushOutcome::Superseded {
                cloud: Box::new((*held).clone()),
            }),
            Decision::Refused(refusal) => Some(refusal.outcome(grant, change)),
        }
    }
}

/// The write rule: what the cloud does with `change` from `grant`'s writer, holding `held`
/// for its key, at `now_ms` (the module documentation says why each answer).
pub fn decide<'a>(
    held: Option<&'a Change>,
    change: &Change,
    grant: &Grant,
    models: &Models,
    now_ms: u64,
) -> Decision<'a> {
    if let Err(refusal) = admit(change, grant, models) {
        return Decision::Refused(refusal);
    }
    match against(held, change, grant, models) {
        // A retry is a retry, however the cloud's clock moved since the first attempt.
        decision @ (Decision::AlreadyThere | Decision::Refused(_)) => decision,
        decision => match bounded(change, now_ms) {
            Err(refusal) => Decision::Refused(refusal),
            Ok(()) => decision,
        },
    }
}

/// The part of the rule that needs no held row and no time: the change itself (its item
/// names its model and key), its model's direction for the writer's role, its version's
/// replica, and its own scope.
pub fn admit(change: &Change, grant: &Grant, models: &Models) -> Result<(), Refusal> {
    let key = &change.key;
    if let (ChangeOp::Put, item) = (change.op, &change.item) {
        let Some(item) = item else {
            return Err(Refusal::Invalid(format!(
                "the put of {key} carries no item"
            )));
        };
        let size = item_size(item);
        if size > ITEM_BYTES_MAX {
            return Err(Refusal::Invalid(format!(
                "the item of {key} is {size} bytes, over DynamoDB's {ITEM_BYTES_MAX}"
            )));
        }
        if let Some(layout) = &models.layout {
            if layout.model_of(item) != Some(change.model.as_str()) {
                return Err(Refusal::Invalid(format!(
                    "the item of {key} names model {:?} in {}, not the change's {}",
                    layout.model_of(item).unwrap_or(""),
                    layout.type_field,
                    change.model
                )));
            }
            if !layout.holds_key(item, key) {
                return Err(Refusal::Invalid(format!(
                    "the item's key attributes are not the change's key {key}"
                )));
            }
        }
    }
    let Some(direction) = models.direction(&change.model) else {
        let model = change.model.clone();
        return Err(Refusal::UnknownModel { model });
    };
    if !grant.role.may_write(direction) {
        return Err(Refusal::Direction {
            model: change.model.clone(),
            direction,
            role: grant.role,
        });
    }
    if let Some(replica) = &grant.replica
        && change.version.replica != *replica
    {
        let version_of = change.version.replica.as_str().to_string();
        return Err(Refusal::Replica { version_of });
    }
    if !grant.has_scope(&change.scope) {
        let scope = change.scope.clone();
        return Err(Refusal::Scope { scope, held: false });
    }
    Ok(())
}

/// The bound on versions: at most [`AHEAD_MAX_MS`] past the cloud's time `now_ms`.
pub fn bounded(change: &Change, now_ms: u64) -> Result<(), Refusal> {
    let ahead_ms = change.version.hlc.physical_ms().saturating_sub(now_ms);
    match ahead_ms > AHEAD_MAX_MS {
        true => Err(Refusal::Ahead {
            ahead_ms,
            server_time_ms: now_ms,
        }),
        false => Ok(()),
    }
}

/// The part of the rule that compares with the held row: its scope and model, then the
/// versions; a change that would land must not move a downloading model's key to another
/// scope.
pub fn against<'a>(
    held: Option<&'a Change>,
    change: &Change,
    grant: &Grant,
    models: &Models,
) -> Decision<'a> {
    let Some(held) = held else {
        return Decision::Land { replaced: None };
    };
    if !grant.has_scope(&held.scope) {
        let scope = held.scope.clone();
        return Decision::Refused(Refusal::Scope { scope, held: true });
    }
    if held.model != change.model {
        let model = held.model.clone();
        return Decision::Refused(Refusal::HeldModel { model });
    }
    if held.version == change.version {
        Decision::AlreadyThere
    } else if held.version > change.version {
        Decision::Superseded { held }
    } else if held.scope != change.scope
        && models
            .direction(&change.model)
            .is_some_and(SyncDirection::downloads)
    {
        Decision::Refused(Refusal::Move {
            from: held.scope.clone(),
            to: change.scope.clone(),
        })
    } else {
        Decision::Land {
            replaced: Some(held),
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_types::{Hlc, Item, Key, ReplicaId, Value, Version};

    use super::*;

    const NOW_MS: u64 = 1_000_000;

    fn change(ms: u64, scope: &str, model: &str) -> Change {
        Change {
            model: model.into(),
            key: Key {
                hash: Value::S("k".into()),
                sort: None,
            },
            op: ChangeOp::Put,
            version: Version {
                hlc: Hlc::new(ms, 0),
                replica: ReplicaId::parse("w").unwrap_or_else(|e| panic!("{e}")),
            },
            scope: scope.into(),
            item: Some(Item::from([
                ("k".to_string(), Value::S("k".into())),
                ("_type".to_string(), Value::S(model.into())),
            ])),
            base: None,
        }
    }

    fn models() -> Models {
        let layout = ItemLayout {
            type_field: "_type".into(),
            hash: "k".into(),
            sort: None,
        };
        let directions = [
            ("Up".to_string(), SyncDirection::Up),
            ("Down".to_string(), SyncDirection::Down),
            ("Both".to_string(), SyncDirection::Both),
            ("Off".to_string(), SyncDirection::None),
        ];
        Models::new(directions, layout)
    }

    fn device() -> Grant {
        Grant::device("devA", Some(["devA".to_string(), "*".to_string()].into()))
    }

    /// The decision's kind, for tables.
    fn kind(decision: &Decision<'_>) -> &'static str {
        match decision {
            Decision::Land { replaced: None } => "land",
            Decision::Land { replaced: Some(_) } => "land over",
            Decision::AlreadyThere => "already there",
            Decision::Superseded { .. } => "superseded",
            Decision::Refused(Refusal::Invalid(_)) => "invalid",
            Decision::Refused(Refusal::UnknownModel { .. }) => "unknown model",
            Decision::Refused(Refusal::Direction { .. }) => "direction",
            Decision::Refused(Refusal::Scope { held: false, .. }) => "scope",
            Decision::Refused(Refusal::Scope { held: true, .. }) => "held scope",
            Decision::Refused(Refusal::Ahead { .. }) => "ahead",
            Decision::Refused(Refusal::Replica { .. }) => "replica",
            Decision::Refused(Refusal::HeldModel { .. }) => "held model",
            Decision::Refused(Refusal::Move { .. }) => "move",
        }
    }

    #[test]
    fn every_answer_of_the_rule() {
        let service = Grant::service("config", None);
        let dev = device();
        let held_a = change(500, "devA", "Both");
        let held_b = change(500, "devB", "Both");
        let mut empty = change(600, "devA", "Both");
        empty.item = None;
        let mut huge = change(600, "devA", "Both");
        huge.item = Some(Item::from([(
            "blob".to_string(),
            Value::B(vec![0; ITEM_BYTES_MAX]),
        )]));
        let mut delete = change(600, "devA", "Both");
        (delete.op, delete.item) = (ChangeOp::Delete, None);
        let mut not_its_model = change(600, "devA", "Both");
        if let Some(item) = &mut not_its_model.item {
            item.insert("_type".into(), Value::S("Down".into()));
        }
        let mut not_its_key = change(600, "devA", "Both");
        if let Some(item) = &mut not_its_key.item {
            item.insert("k".into(), Value::S("other".into()));
        }
        let held_down = change(500, "*", "Down");
        let mut delete_down = change(600, "*", "Both");
        (delete_down.op, delete_down.item) = (ChangeOp::Delete, None);
        let bound = dev
            .clone()
            .as_replica(ReplicaId::parse("devA").unwrap_or_else(|e| panic!("{e}")));
        let far = change(NOW_MS + AHEAD_MAX_MS + 1, "devA", "Both");
        let mut tombstone_b = change(500, "devB", "Both");
        (tombstone_b.op, tombstone_b.item) = (ChangeOp::Delete, None);
        let held_up_b = change(500, "devB", "Up");
        // (held, change, grant, expected, why)
        let rows: Vec<(Option<&Change>, Change, &Grant, &str, &str)> = vec![
            (None, change(600, "devA", "Both"), &dev, "land", "no row"),
            (
                Some(&held_a),
                change(600, "devA", "Both"),
                &dev,
                "land over",
                "newer",
            ),
            (
                Some(&held_a),
                change(500, "devA", "Both"),
                &dev,
                "already there",
                "a retry",
            ),
            (
                Some(&held_a),
                change(400, "devA", "Both"),
                &dev,
                "superseded",
                "older",
            ),
            (
                Some(&held_a),
                delete.clone(),
                &dev,
                "land over",
                "a tombstone is a change",
            ),
            (None, empty, &dev, "invalid", "a put without an item"),
            (None, huge, &dev, "invalid", "an item over 400 KiB"),
            (
                None,
                change(600, "devA", "Gone"),
                &dev,
                "unknown model",
                "not in the schema",
            ),
            (
                None,
                change(600, "*", "Down"),
                &dev,
                "direction",
                "devices do not write down",
            ),
            (
                None,
                change(600, "devA", "Off"),
                &dev,
                "direction",
                "nor models that stay",
            ),
            (
                None,
                change(600, "*", "Up"),
                &service,
                "land",
                "services write every model the cloud keeps",
            ),
            (
                None,
                change(600, "*", "Down"),
                &service,
                "land",
                "services write down",
            ),
            (
                None,
                change(600, "devA", "Up"),
                &dev,
                "land",
                "devices write up",
            ),
            (
                None,
                change(600, "devB", "Both"),
                &dev,
                "scope",
                "another scope",
            ),
            (
                Some(&held_b),
                change(600, "devA", "Both"),
                &dev,
                "held scope",
                "a takeover",
            ),
            (
                Some(&held_b),
                change(400, "devA", "Both"),
                &dev,
                "held scope",
                "no read of it",
            ),
            (
                Some(&held_b),
                change(600, "devB", "Both"),
                &service,
                "land over",
                "all scopes",
            ),
            (
                None,
                change(NOW_MS + AHEAD_MAX_MS, "devA", "Both"),
                &dev,
                "land",
                "at the bound",
            ),
            (None, far.clone(), &dev, "ahead", "past it"),
            (
                Some(&far),
                far.clone(),
                &dev,
                "already there",
                "a retry, whatever the clock",
            ),
            (
                None,
                not_its_model,
                &dev,
                "invalid",
                "an item of another model",
            ),
            (None, not_its_key, &dev, "invalid", "an item of another key"),
            (
                Some(&held_down),
                delete_down,
                &dev,
                "held model",
                "no delete of a down row",
            ),
            (
                None,
                change(600, "devA", "Both"),
                &bound,
                "replica",
                "another's version",
            ),
            (
                Some(&held_b),
                change(600, "devA", "Both"),
                &service,
                "move",
                "a downloading key stays in its scope",
            ),
            (
                Some(&tombstone_b),
                change(600, "devA", "Both"),
                &service,
                "move",
                "its tombstone holds it there",
            ),
            (
                Some(&held_up_b),
                change(600, "devA", "Up"),
                &service,
                "land over",
                "no device reads an up model",
            ),
        ];
        for (held, incoming, grant, expected, why) in rows {
            let decision = decide(held, &incoming, grant, &models(), NOW_MS);
            assert_eq!(kind(&decision), expected, "{why}: {decision:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_key_and_the_writer_and_ahead_tells_the_time() {
        let incoming = change(600, "devB", "Both");
        let decision = decide(None, &incoming, &device(), &models(), NOW_MS);
        let Some(PushOutcome::Rejected { reason }) = decision.outcome(&device(), &incoming) else {
            panic!("{decision:?}")
        };
        assert!(
            reason.contains("'devA'") && reason.contains("'devB'"),
            "{reason}"
        );
        assert!(reason.contains(&incoming.key.to_string()), "{reason}");
        let far = change(u64::MAX >> 16, "devA", "Both");
        let decision = decide(None, &far, &device(), &models(), NOW_MS);
        assert_eq!(
            decision.outcome(&device(), &far),
            Some(PushOutcome::Ahead {
                server_time_ms: NOW_MS
            })
        );
    }
}
