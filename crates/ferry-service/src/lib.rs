//! Cloud mode over any transport: a cloud service (or an operator) creates, reads, updates,
//! removes and finds items as a replica of its own, with no local store, through the same
//! seam devices use: through Ferry's relay with a service token, or any other
//! [`Transport`] that reads single rows.
//!
//! As on a device, the schema prepares every item (keys, templates, defaults, validation,
//! timestamps from the cloud's time) and `crypt` fields are sealed; every write reads the
//! row first, carries it as its base and a version past it, and lands by the cloud's write
//! rule (last writer wins by version), so devices receive it and log a conflict when a
//! device's write lost. A write that finds a newer row than its own version fails with
//! `ConditionalCheckFailed`; a device write that lands between the read and the write, with
//! an older version, is replaced (unlike DynamoDB's cloud mode, which writes only over the
//! row it read), and its device logs the conflict. A write whose answer was lost is read
//! back: if the row holds it, it landed.
//!
//! `find` reads snapshots of scopes (a transport has no queries): it suits configuration
//! and small scopes; DynamoDB's cloud mode (`ferry_dynamo::CloudReplica`) queries indexes.

mod find;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_cloud::{PushOutcome, Session, Transport, TransportError};
use ferry_journal::{Change, ChangeOp};
use ferry_schema::{Context, Crypto, Model, PutMode, Schema, UpdateOps};
use ferry_types::version::MAX_FORWARD_MS_DEFAULT;
use ferry_types::{Hlc, HlcClock, Item, ItemLayout, ItemRef, Key, ReplicaId, Value, Version};
use serde_json::{Map, Value as Json};

pub use find::Found;

/// The attribute holding an item's version text, as devices keep it.
const VERSION_ATTR: &str = "_ver";

/// What went wrong in cloud mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument: an unknown model, a key that cannot be resolved, a missing key.
    #[error("{0}")]
    Argument(String),
    /// The schema refused the operation (validation, an unknown field).
    #[error(transparent)]
    Schema(#[from] ferry_schema::Error),
    /// The data said no: not found, changed meanwhile, or refused by the write rule.
    #[error("{message}")]
    Refused {
        /// `NotFoundError`, `ConditionalCheckFailed` or `Refused`.
        code: &'static str,
        /// What, and which item.
        message: String,
    },
    /// The cloud could not be reached, refused the credentials, or failed the call.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl Error {
    /// The error's code, as a device's operation gives it.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Argument(_) => "ArgumentError",
            Error::Schema(e) => e.code(),
            Error::Refused { code, .. } => code,
            Error::Transport(TransportError::Unauthorized(_)) => "Unauthorized",
            Error::Transport(TransportError::Rejected(_)) => "Refused",
            Error::Transport(_) => "TransportError",
        }
    }
}

/// Results of cloud mode.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A cloud service's view of the cloud through `T`.
pub struct Service<T> {
    transport: T,
    schema: Arc<Schema>,
    /// Where the schema's items keep their key.
    layout: ItemLayout,
    crypto: Option<Crypto>,
    context: Context,
    replica: ReplicaId,
    /// The handshake: the scopes granted and the cloud's time when it answered.
    session: Session,
    /// When the handshake answered, on the monotonic clock: the cloud's time now is the
    /// session's plus the time since (a wall clock that steps is never read).
    connected: Instant,
    /// Stamps this service's versions from the cloud's time.
    clock: Mutex<HlcClock>,
}

impl<T: Transport> Service<T> {
    /// Connects `transport` for `schema`, writing as replica `replica`; a schema with
    /// crypt fields needs `crypto`.
    pub async fn connect(
        transport: T,
        schema: Arc<Schema>,
        replica: &str,
        crypto: Option<Crypto>,
    ) -> Result<Service<T>> {
        if let (None, Some(field)) = (&crypto, schema.crypt_field()) {
            return Err(Error::Argument(format!(
                "{field} is a crypt field but no key was given (OneTable's crypto: \
                 {{primary: {{cipher: 'aes-256-gcm', password: ...}}}})"
            )));
        }
        let replica = ReplicaId::parse(replica)
            .map_err(|e| Error::Argument(format!("replica id '{replica}': {e}")))?;
        let session = transport.connect().await?;
        Ok(Service {
            transport,
            layout: schema.item_layout(),
            schema,
            crypto,
            context: Context::new(),
            replica,
            session,
            connected: Instant::now(),
            clock: Mutex::new(HlcClock::new(Hlc::ZERO, MAX_FORWARD_MS_DEFAULT)),
        })
    }

    /// Creates an item; fails with `ConditionalCheckFailed` if it exists.
    pub async fn create(&self, model: &str, props: &Json) -> Result<Json> {
        let model = self.model(model)?;
        let item = (model.prepare_put(
            &self.schema,
            object(props)?,
            &self.context,
            self.now_ms() as i64,
            PutMode::Create,
        ))?;
        let key = self.key_of(&item)?;
        let seen = self.transport.get(&key).await?;
        if seen.as_ref().is_some_and(|row| row.op == ChangeOp::Put) {
            let message = format!("{} {key} already exists", model.name);
            return Err(refused("ConditionalCheckFailed", message));
        }
        self.store(model, &key, item, seen.as_ref()).await
    }

    /// Reads an item by its key; `None` when it is absent or removed.
    pub async fn get(&self, model: &str, props: &Json, hidden: bool) -> Result<Option<Json>> {
        let model = self.model(model)?;
        let key = self.full_key(model, object(props)?)?;
        let row = self.transport.get(&key).await?;
        Ok(self
            .live(model, row)?
            .map(|item| self.shape(model, &item, hidden)))
    }

    /// Updates an item (creates it with `upsert`); fails with `NotFoundError` if it is
    /// absent, or `ConditionalCheckFailed` if it changed meanwhile.
    pub async fn update(
        &self,
        model: &str,
        props: &Json,
        ops: &UpdateOps,
        upsert: bool,
    ) -> Result<Json> {
        let model = self.model(model)?;
        let props = object(props)?;
        let key = self.full_key(model, props)?;
        let seen = self.transport.get(&key).await?;
        let existing = self.live(model, seen.clone())?;
        if existing.is_none() && !upsert {
            let message = format!("{} {key} does not exist", model.name);
            return Err(refused("NotFoundError", message));
        }
        let existing = existing.map(|item| model.open_owned(item, self.crypto.as_ref()));
        let item = model.prepare_update(
            &self.schema,
            existing.as_ref(),
            props,
            ops,
            &self.context,
            self.now_ms() as i64,
        )?;
        if self.key_of(&item)? != key {
            let message = format!("{}: update cannot change the primary key", model.name);
            return Err(Error::Argument(message));
        }
        self.store(model, &key, item, seen.as_ref()).await
    }

    /// Removes an item (a tombstone takes its place, so devices remove it too); returns it.
    pub async fn remove(&self, model: &str, props: &Json) -> Result<Option<Json>> {
        let model = self.model(model)?;
        let key = self.full_key(model, object(props)?)?;
        let seen = self.transport.get(&key).await?;
        let Some(item) = self.live(model, seen.clone())? else {
            return Ok(None);
        };
        self.write(model, &key, None, seen.as_ref()).await?;
        Ok(Some(self.shape(model, &item, false)))
    }

    /// The cloud's time now: the handshake's, carried on the monotonic clock.
    pub fn now_ms(&self) -> u64 {
        let elapsed = self.connected.elapsed().as_millis() as u64;
        self.session.server_time_ms.saturating_add(elapsed)
    }

    fn model(&self, name: &str) -> Result<&Model> {
        Ok(self.schema.model(name)?)
    }

    fn key_of(&self, item: &Item) -> Result<Key> {
        self.layout.key_of(item).ok_or_else(|| {
            Error::Argument(format!(
                "the item has no {} key attributes",
                self.layout.hash
            ))
        })
    }

    fn full_key(&self, model: &Model, props: &Map<String, Json>) -> Result<Key> {
        let query = model.key_query(&self.schema, props, &self.context, None)?;
        query.full_key().ok_or_else(|| {
            Error::Argument(format!(
                "{}: this operation needs the full primary key; give the properties its templates use",
                model.name
            ))
        })
    }

    /// The item of a row of `model`, unless it is a tombstone.
    fn live(&self, model: &Model, row: Option<Change>) -> Result<Option<Item>> {
        let Some(Change {
            op: ChangeOp::Put,
            item: Some(item),
            model: name,
            ..
        }) = row
        else {
            return Ok(None);
        };
        match name == model.name {
            true => Ok(Some(item)),
            false => Err(Error::Argument(format!(
                "the item at that key is a {name}, not a {}",
                model.name
            ))),
        }
    }

    /// Seals `item`'s crypt fields and writes it over `seen`; returns it as a device shows it.
    async fn store(
        &self,
        model: &Model,
        key: &Key,
        mut item: Item,
        seen: Option<&Change>,
    ) -> Result<Json> {
        (model.seal(&mut item, self.crypto.as_ref())).map_err(Error::Argument)?;
        self.write(model, key, Some(&item), seen).await?;
        Ok(self.shape(model, &item, false))
    }

    /// Writes `item` (or, for `None`, a tombstone where the item was) over `seen`, the row
    /// as read: its base, with a version past it.
    async fn write(
        &self,
        model: &Model,
        key: &Key,
        item: Option<&Item>,
        seen: Option<&Change>,
    ) -> Result<()> {
        let base = seen.map(|row| row.version.clone());
        let version = self.version_past(base.as_ref());
        let (op, scope, item) = match item {
            Some(item) => {
                let scope = (model.scope_of(item, &self.context)).map_err(Error::Argument)?;
                let mut view = model.cloud_view(item);
                view.insert(VERSION_ATTR.into(), Value::S(version.to_text()));
                (ChangeOp::Put, scope, Some(view))
            }
            // The tombstone goes where the item was: the devices that have it read there.
            None => {
                let scope = seen.map(|row| row.scope.clone()).unwrap_or_default();
                (ChangeOp::Delete, scope, None)
            }
        };
        let change = Change {
            model: model.name.clone(),
            key: key.clone(),
            op,
            version,
            scope,
            item,
            base,
        };
        let (key, version) = (change.key.clone(), change.version.clone());
        let answer = match self.transport.push(vec![change]).await {
            Ok(answer) => answer,
            // The answer may be lost after the write landed: the row tells.
            Err(lost @ (TransportError::Unavailable(_) | TransportError::Timeout(_))) => {
                let held = self.transport.get(&key).await.map_err(|_| lost.clone())?;
                return match held.is_some_and(|row| row.version == version) {
                    true => Ok(()),
                    false => Err(Error::Transport(lost)),
                };
            }
            Err(e) => return Err(Error::Transport(e)),
        };
        let mut answer = answer;
        match answer.pop().map(|(_, _, outcome)| outcome) {
            Some(PushOutcome::Applied) => Ok(()),
            Some(PushOutcome::Superseded { .. }) => Err(refused(
                "ConditionalCheckFailed",
                format!(
                    "{} {key} changed meanwhile: read it again and retry",
                    model.name
                ),
            )),
            Some(PushOutcome::Rejected { reason }) => Err(refused("Refused", reason)),
            Some(PushOutcome::Ahead { server_time_ms }) => Err(refused(
                "Refused",
                format!("the cloud's time is {server_time_ms}, behind this service's version"),
            )),
            None => Err(Error::Transport(TransportError::Unavailable(
                "the cloud did not answer the write".into(),
            ))),
        }
    }

    /// A new version of this service at the cloud's time, past `over`.
    fn version_past(&self, over: Option<&Version>) -> Version {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        let mut hlc = clock.tick(self.now_ms());
        if let Some(over) = over.filter(|over| over.hlc >= hlc) {
            hlc = Hlc::from_u64(over.hlc.as_u64().saturating_add(1));
        }
        Version {
            hlc,
            replica: self.replica.clone(),
        }
    }

    fn shape(&self, model: &Model, item: &Item, hidden: bool) -> Json {
        let item = model.open(item, self.crypto.as_ref());
        Json::Object(model.to_json(&ItemRef::of(&item), hidden))
    }
}

fn object(props: &Json) -> Result<&Map<String, Json>> {
    props
        .as_object()
        .ok_or_else(|| Error::Argument("the properties must be a JSON object".into()))
}

fn refused(code: &'static str, message: String) -> Error {
    Error::Refused { code, message }
}

#[cfg(test)]
mod tests;
