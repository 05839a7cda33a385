//! The invariants: safety after every step, convergence after the faults heal.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use ferry::replication::AHEAD_MAX_MS;
use ferry::types::{Hlc, Key, Version};
use ferry::{Db, FindOptions, LocalState, PendingChange};
use ferry_journal::{Change, ChangeOp};
use serde_json::{Value as Json, json};

use crate::sim::faults::lock;
use crate::sim::model::{Direction, MODELS, ModelSpec};
use crate::sim::world::{Device, World};

/// What the checker remembers between steps.
#[derive(Debug, Default)]
pub struct Checker {
    /// Per device: the outbox as last seen.
    outboxes: Vec<BTreeMap<Key, PendingChange>>,
    /// Per device and scope: the cursor as last seen.
    cursors: Vec<BTreeMap<String, Hlc>>,
    /// Per key: the newest version the cloud was seen to hold.
    cloud_versions: BTreeMap<Key, Version>,
}

impl Checker {
    pub fn new(devices: usize) -> Checker {
        Checker {
            outboxes: vec![BTreeMap::new(); devices],
            cursors: vec![BTreeMap::new(); devices],
            cloud_versions: BTreeMap::new(),
        }
    }

    /// Forgets what device `index` had: a power loss took back what it never fsynced.
    pub fn forget(&mut self, index: usize) {
        self.outboxes[index].clear();
        self.cursors[index].clear();
    }

    /// Every safety invariant, on the world as it is between two steps.
    pub fn safety(&mut self, world: &World) -> Result<()> {
        for device in &world.devices {
            let violations = std::mem::take(&mut lock(&device.link).violations);
            if let Some(first) = violations.first() {
                bail!("a stale write won in the cloud: {first}");
            }
        }
        self.cloud_never_goes_back(world)?;
        for (index, device) in world.devices.iter().enumerate() {
            let db = device.db()?;
            self.acknowledged_writes_are_in_the_cloud(index, device, world)?;
            journal_matches_data(device, db)?;
            self.cursors_never_go_back(index, device, db)?;
        }
        Ok(())
    }

    /// (1) A change leaves the outbox only once the cloud holds its version or a newer one
    /// (acknowledged, or superseded by a newer write that then wins), or when the cloud
    /// refused its version as too far ahead of its time (a device whose clock runs ahead
    /// re-stamps it at the cloud's time, and that version is checked from then on).
    fn acknowledged_writes_are_in_the_cloud(
        &mut self,
        index: usize,
        device: &Device,
        world: &World,
    ) -> Result<()> {
        let now: BTreeMap<Key, PendingChange> = (device.db()?.inspect_pending()?.into_iter())
            .map(|p| (p.key.clone(), p))
            .collect();
        let cloud_ms = world.cloud.now_ms()?;
        for (key, seen) in &self.outboxes[index] {
            if now.contains_key(key) {
                continue;
            }
            let held = world.cloud.get(key)?.map(|c| c.version);
            let ahead = seen.version.hlc.physical_ms() > cloud_ms + AHEAD_MAX_MS;
            if !ahead && held.as_ref().is_none_or(|held| *held < seen.version) {
                let held = held.as_ref().map_or("nothing".into(), Version::to_text);
                bail!(
                    "device {}: the change of {key} at {} left the outbox, but the cloud holds {held}",
                    device.name,
                    seen.version
                );
            }
        }
        self.outboxes[index] = now;
        Ok(())
    }

    /// (3) Per device and scope, the cursor only moves forward (also across a reopen).
    fn cursors_never_go_back(&mut self, index: usize, device: &Device, db: &Db) -> Result<()> {
        for (scope, text) in db.status().cursors {
            let cursor = Hlc::parse(&text).with_context(|| format!("cursor text {text}"))?;
            let last = self.cursors[index].entry(scope.clone()).or_insert(cursor);
            if cursor < *last {
                bail!(
                    "device {}: the cursor of scope '{scope}' went back from {last} to {cursor}",
                    device.name
                );
            }
            *last = cursor;
        }
        Ok(())
    }

    /// The cloud's rows only get newer, and a model that does not sync never reaches it.
    /// A tombstone purged past the horizon takes its key's history with it: an older write
    /// may land after that (the horizon's documented limit), so only rows still held count.
    fn cloud_never_goes_back(&mut self, world: &World) -> Result<()> {
        let rows = cloud_rows(world)?;
        let held: std::collections::BTreeSet<&Key> = rows.iter().map(|c| &c.key).collect();
        self.cloud_versions.retain(|key, _| held.contains(key));
        for change in rows {
            if ModelSpec::named(&change.model).is_some_and(|m| m.direction == Direction::None) {
                bail!(
                    "model {} (sync: 'none') reached the cloud: {}",
                    change.model,
                    change.key
                );
            }
            let newest = self.cloud_versions.entry(change.key.clone());
            let newest = newest.or_insert_with(|| change.version.clone());
            if change.version < *newest {
                bail!(
                    "cloud row {} went back from {newest} to {}",
                    change.key,
                    change.version
                );
            }
            *newest = change.version;
        }
        Ok(())
    }
}

/// (2) Every pending change describes the data: a put's item carries its version in `_ver`,
/// a remove's key has no item and a tombstone at its version.
fn journal_matches_data(device: &Device, db: &Db) -> Result<()> {
    for pending in db.inspect_pending()? {
        let local = db.inspect_key(&pending.key)?;
        let agrees = match (&local, pending.delete) {
            (LocalState::Item(item), false) => version_attr(item) == Some(pending.version.clone()),
            (LocalState::Tombstone(version), true) => *version == pending.version,
            _ => false,
        };
        if !agrees {
            bail!(
                "device {}: pending {} of {} at {} but the device holds {local:?}",
                device.name,
                if pending.delete { "remove" } else { "put" },
                pending.key,
                pending.version
            );
        }
    }
    Ok(())
}

fn version_attr(item: &ferry::types::Item) -> Option<Version> {
    Version::parse(item.get("_ver")?.as_str()?).ok()
}

/// Every row of every scope the cloud holds, tombstones included.
fn cloud_rows(world: &World) -> Result<Vec<Change>> {
    let mut rows = Vec::new();
    for scope in world.scopes() {
        rows.extend(world.cloud.rows(&scope)?);
    }
    Ok(rows)
}

/// After healing: every device holds, per synced model and readable scope, exactly the
/// cloud's live items (same keys, same `_ver`, same fields but device-only ones). For `up`
/// models that says the cloud equals the device's own items; `none` models are checked by
/// [`Checker::safety`] never to reach the cloud.
pub fn converged(world: &World) -> Result<()> {
    let rows = cloud_rows(world)?;
    for device in &world.devices {
        let db = device.db()?;
        let quarantined = explained_quarantine(device, db)?;
        events_match_applies_and_conflicts(device, db)?;
        for model in MODELS.iter().filter(|m| m.direction != Direction::None) {
            let scope = match model.per_device {
                true => device.name.as_str(),
                false => device.scopes()[0],
            };
            let mut cloud: BTreeMap<&Key, &Change> = (rows.iter())
                .filter(|c| c.model == model.name && c.scope == scope && c.op == ChangeOp::Put)
                .map(|c| (&c.key, c))
                .collect();
            let mut local = device_items(db, model)?;
            // A quarantined key is the cloud's on one side and the device's on the other.
            local.retain(|key, _| !quarantined.contains(key));
            cloud.retain(|key, _| !quarantined.contains(*key));
            compare(device, db, model, &cloud, &local)?;
        }
    }
    Ok(())
}

/// The keys a device quarantined, each for a reason the run explains: a poison change
/// (its item names another key) or a unique tag that another item holds here.
fn explained_quarantine(device: &Device, db: &Db) -> Result<std::collections::BTreeSet<Key>> {
    let mut keys = std::collections::BTreeSet::new();
    for record in db.quarantine(usize::MAX)? {
        let poison = record.key.contains("shared#p") && record.reason.contains("key");
        let clash = record.reason.contains("unique");
        if !poison && !clash {
            bail!(
                "device {} quarantined {} for no reason the run explains: {}",
                device.name,
                record.key,
                record.reason
            );
        }
        let (pk, sk) = record.key.split_once('/').unwrap_or((&record.key, ""));
        keys.insert(Key {
            hash: ferry::types::Value::S(pk.to_string()),
            sort: Some(ferry::types::Value::S(sk.to_string())),
        });
    }
    Ok(keys)
}

/// Every cloud change applied fired exactly one `Cloud` event (never two for one version),
/// and every conflict in the log, each logged once, fired one `Conflict` event.
fn events_match_applies_and_conflicts(device: &Device, db: &Db) -> Result<()> {
    let events = lock(&device.events).clone();
    let mut applied = std::collections::BTreeSet::new();
    for seen in events.iter().filter(|e| e.origin == ferry::Origin::Cloud) {
        let (Some(version), false) = (&seen.version, seen.op == ferry::Op::Conflict) else {
            continue;
        };
        if !applied.insert((seen.key.clone(), version.clone())) {
            bail!(
                "device {}: the cloud change of {:?} at {version} fired twice",
                device.name,
                seen.key
            );
        }
    }
    let conflicts = db.conflicts(usize::MAX)?;
    let mut losers = std::collections::BTreeSet::new();
    for conflict in &conflicts {
        if !losers.insert((conflict.key.clone(), conflict.loser.clone())) {
            let winners: Vec<&str> = (conflicts.iter())
                .filter(|c| c.key == conflict.key && c.loser == conflict.loser)
                .map(|c| c.winner.as_str())
                .collect();
            bail!(
                "device {}: the loser {} of {} is logged twice (winners {})",
                device.name,
                conflict.loser,
                conflict.key,
                winners.join(", ")
            );
        }
    }
    let conflict_events = events
        .iter()
        .filter(|e| e.op == ferry::Op::Conflict)
        .count();
    // Since the last power loss: the log keeps what was fsynced, the events restart.
    let logged = conflicts.len().saturating_sub(device.conflicts_before);
    if conflict_events != logged {
        bail!(
            "device {}: {logged} conflicts logged but {conflict_events} conflict events fired",
            device.name
        );
    }
    Ok(())
}

/// A device's items of `model` in its scope, by key, with their version and JSON.
fn device_items(db: &Db, model: &ModelSpec) -> Result<BTreeMap<Key, (Option<Version>, Json)>> {
    let options = FindOptions {
        hidden: true,
        limit: Some(10_000),
        ..FindOptions::default()
    };
    let page = db.find(model.name, json!({}), &options)?;
    let mut items = BTreeMap::new();
    for item in page.items {
        let text = |name: &str| item[name].as_str().map(str::to_string);
        let (Some(pk), Some(sk)) = (text("pk"), text("sk")) else {
            bail!("{} item without pk/sk: {item}", model.name);
        };
        let key = Key {
            hash: ferry::types::Value::S(pk),
            sort: Some(ferry::types::Value::S(sk)),
        };
        let version = match db.inspect_key(&key)? {
            LocalState::Item(stored) => version_attr(&stored),
            _ => None,
        };
        items.insert(key, (version, without_local_field(model, item)));
    }
    Ok(items)
}

fn compare(
    device: &Device,
    db: &Db,
    model: &ModelSpec,
    cloud: &BTreeMap<&Key, &Change>,
    local: &BTreeMap<Key, (Option<Version>, Json)>,
) -> Result<()> {
    let name = &device.name;
    let schema_model = db.schema().model(model.name)?;
    for (key, change) in cloud {
        let Some((version, fields)) = local.get(*key) else {
            bail!(
                "device {name} lacks {} {key} that the cloud holds at {}",
                model.name,
                change.version
            );
        };
        if version.as_ref() != Some(&change.version) {
            let version = version
                .as_ref()
                .map_or("no version".into(), Version::to_text);
            bail!(
                "device {name} holds {key} at {version}, the cloud at {}",
                change.version
            );
        }
        let item = change.item.clone().unwrap_or_default();
        let cloud_fields =
            Json::Object(schema_model.to_json(&ferry::types::ItemRef::of(&item), true));
        let cloud_fields = without_local_field(model, cloud_fields);
        if *fields != cloud_fields {
            bail!("device {name} holds {key} as {fields}, the cloud as {cloud_fields}");
        }
    }
    if let Some((key, (version, _))) = local.iter().find(|(key, _)| !cloud.contains_key(key)) {
        let version = version
            .as_ref()
            .map_or("no version".into(), Version::to_text);
        bail!(
            "device {name} holds {} {key} at {version} that the cloud does not",
            model.name
        );
    }
    Ok(())
}

fn without_local_field(model: &ModelSpec, mut item: Json) -> Json {
    if let (Some(field), Some(map)) = (model.local_field, item.as_object_mut()) {
        map.remove(field);
    }
    item
}
