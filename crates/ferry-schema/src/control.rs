//! Ferry's per-model `control` section (alias `process`, Ioto's name).

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

pub use ferry_types::SyncDirection;

use crate::doc::{self, at};
use crate::template::Template;
use crate::{Error, Result};
use ferry_types::Durability;

/// `delay`, `show`, `notify`, `actions` and `metrics` are Ioto's: accepted, not interpreted.
const CONTROL_PROPERTIES: &[&str] = &[
    "enable",
    "sync",
    "scope",
    "durability",
    "mem",
    "delay",
    "show",
    "notify",
    "actions",
    "metrics",
];

/// Where a model lives and how it replicates (docs/design.md section 5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    /// Where the model is stored.
    pub enable: Enable,
    /// Which way its changes replicate.
    pub sync: SyncDirection,
    /// Which devices see its items (`'${deviceId}'`, `'*'`); `None` leaves the default to the
    /// sync layer (the `deviceId` field if the model has one, else `*`).
    pub scope: Option<String>,
    /// Commit durability, if set.
    pub durability: Option<Durability>,
    /// Kept in memory only, not persisted.
    pub mem: bool,
}

/// Where a model is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Enable {
    /// On the device and in the cloud.
    #[default]
    Both,
    /// On the device only; it cannot sync.
    Device,
    /// In the cloud only; the device API refuses it.
    Cloud,
}

/// The section's name as written (`control` or `process`) and its entries by model name.
pub(crate) type Controls = (&'static str, BTreeMap<String, Control>);

/// Loads `control` (or its alias `process`).
pub(crate) fn load(root: &Map<String, Json>) -> Result<Controls> {
    let (section, value) = match (root.get("control"), root.get("process")) {
        (Some(_), Some(_)) => {
            return Err(Error::schema(
                "process",
                "both control and process are given: process is an alias of control, keep one",
            ));
        }
        (Some(value), None) => ("control", value),
        (None, Some(value)) => ("process", value),
        (None, None) => return Ok(("control", BTreeMap::new())),
    };
    let map = doc::object(value, section)?;
    let mut controls = BTreeMap::new();
    for (model, entry) in map {
        controls.insert(model.clone(), load_entry(entry, &at(section, model))?);
    }
    Ok((section, controls))
}

fn load_entry(value: &Json, place: &str) -> Result<Control> {
    let map = doc::object(value, place)?;
    doc::check_keys(map, place, CONTROL_PROPERTIES)?;
    let enable = match doc::choice(map, place, "enable", &["both", "device", "cloud"])? {
        Some("device") => Enable::Device,
        Some("cloud") => Enable::Cloud,
        _ => Enable::Both,
    };
    let sync = match doc::choice(map, place, "sync", &["none", "up", "down", "both"])? {
        Some("up") => SyncDirection::Up,
        Some("down") => SyncDirection::Down,
        Some("both") => SyncDirection::Both,
        _ => SyncDirection::None,
    };
    if enable == Enable::Device && sync != SyncDirection::None {
        return Err(Error::schema(
            at(place, "sync"),
            "a model with enable: 'device' stays on the device: set sync: 'none' or enable: 'both'",
        ));
    }
    let durability = doc::choice(map, place, "durability", &["default", "immediate"])?.map(|d| {
        if d == "immediate" {
            Durability::Immediate
        } else {
            Durability::Default
        }
    });
    let scope = doc::text(map, place, "scope")?.map(str::to_string);
    if let Some(scope) = &scope {
        Template::parse(scope).map_err(|message| Error::schema(at(place, "scope"), message))?;
    }
    let mem = doc::boolean(map, place, "mem")?.unwrap_or(false);
    Ok(Control {
        enable,
        sync,
        scope,
        durability,
        mem,
    })
}
