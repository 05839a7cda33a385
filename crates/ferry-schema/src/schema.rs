//! The schema document: loading (JSON5, `blend`), `params`, and lookup of indexes and models.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value as Json};

use crate::doc::{self, at};
use crate::index::{self, Index};
use crate::model::{self, Model};
use crate::{Enable, Error, Result, SyncDirection};

/// Top-level properties; `description`, `queries`, `items` and `extensions` are kept and ignored.
const DOCUMENT_PROPERTIES: &[&str] = &[
    "version",
    "format",
    "indexes",
    "models",
    "params",
    "control",
    "process",
    "blend",
    "description",
    "queries",
    "items",
    "extensions",
];

const PARAMS_PROPERTIES: &[&str] = &[
    "typeField",
    "timestamps",
    "createdField",
    "updatedField",
    "isoDates",
    "nulls",
    "separator",
    "warn",
    "hidden",
    "legacyEmpties",
];

/// A loaded, validated schema.
#[derive(Debug, Clone)]
pub struct Schema {
    document: Json,
    params: Params,
    indexes: Vec<Index>,
    models: BTreeMap<String, Model>,
}

/// The schema's `params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Attribute holding the model name (`_type`).
    pub type_field: String,
    /// Which timestamps are kept.
    pub timestamps: Timestamps,
    /// Name of the creation timestamp (`created`).
    pub created_field: String,
    /// Name of the update timestamp (`updated`).
    pub updated_field: String,
    /// Dates stored as ISO-8601 text instead of epoch milliseconds.
    pub iso_dates: bool,
    /// Nulls stored as NULL instead of removing the attribute.
    pub nulls: bool,
    /// Separator used by `encode`.
    pub separator: String,
}

/// Which of `created` / `updated` the schema keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timestamps {
    /// Set `created` on create.
    pub created: bool,
    /// Set `updated` on create and update.
    pub updated: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            type_field: "_type".to_string(),
            timestamps: Timestamps::default(),
            created_field: "created".to_string(),
            updated_field: "updated".to_string(),
            iso_dates: false,
            nulls: false,
            separator: "#".to_string(),
        }
    }
}

impl Schema {
    /// Loads JSON or JSON5 text. A `blend` is an error here: its parts are relative to a
    /// file, so use [`Schema::from_path`].
    pub fn parse(text: &str) -> Result<Schema> {
        let document = parse_json5(text, "schema")?;
        if document.get("blend").is_some() {
            return Err(Error::schema(
                "blend",
                "blend parts are relative to the schema file: load the schema with Schema::from_path",
            ));
        }
        Schema::from_value(document)
    }

    /// Loads a schema file, merging its `blend` parts (relative to the file) in order.
    pub fn from_path(path: &Path) -> Result<Schema> {
        let mut document = read_document(path)?;
        let parts = match document
            .as_object_mut()
            .and_then(|root| root.remove("blend"))
        {
            None => Vec::new(),
            Some(Json::Array(parts)) => parts,
            Some(other) => {
                return Err(Error::schema(
                    "blend",
                    format!("expected a list of file paths, got {other}"),
                ));
            }
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        for (i, part) in parts.iter().enumerate() {
            let relative = part.as_str().ok_or_else(|| {
                Error::schema(
                    format!("blend[{i}]"),
                    format!("expected a file path, got {part}"),
                )
            })?;
            let mut blended = read_document(&dir.join(relative))?;
            // A part's own blend is not followed (OneTable's rule), so parts cannot loop.
            if let Some(map) = blended.as_object_mut() {
                map.remove("blend");
            }
            merge(&mut document, blended);
        }
        Schema::from_value(document)
    }

    /// Loads an already merged document, such as [`Schema::document`] stored by the database.
    pub fn from_value(document: Json) -> Result<Schema> {
        let root = doc::object(&document, "")?;
        doc::check_keys(root, "", DOCUMENT_PROPERTIES)?;
        if root.contains_key("blend") {
            return Err(Error::schema(
                "blend",
                "this document still has blend: load it with Schema::from_path",
            ));
        }
        check_version(root)?;
        let params = load_params(root.get("params"))?;
        let indexes = index::load(root.get("indexes"))?;
        let models = model::load_models(root, &params, &indexes)?;
        Ok(Schema {
            document,
            params,
            indexes,
            models,
        })
    }

    /// The merged document, which [`Schema::from_value`] loads again.
    pub fn document(&self) -> &Json {
        &self.document
    }

    /// The schema's params, defaults filled in.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The primary index.
    pub fn primary(&self) -> &Index {
        // `index::load` always puts the primary index first and fails without one.
        &self.indexes[0]
    }

    /// Every index: primary first, then the others in name order.
    pub fn indexes(&self) -> &[Index] {
        &self.indexes
    }

    /// The index called `name`.
    pub fn index(&self, name: &str) -> Result<&Index> {
        self.indexes.iter().find(|i| i.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.indexes.iter().map(|i| i.name.as_str()).collect();
            Error::Argument(format!(
                "unknown index '{name}' (the schema has: {})",
                names.join(", ")
            ))
        })
    }

    /// Every model, in name order.
    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    /// The models the cloud keeps and their directions, as the cloud's write rule sees
    /// them: its `sync` for a model on both sides, `down` for one only the cloud keeps
    /// (`enable: 'cloud'`); a model only devices keep is not among them.
    pub fn cloud_directions(&self) -> impl Iterator<Item = (String, SyncDirection)> + '_ {
        self.models.values().filter_map(|model| {
            let direction = match model.control.enable {
                Enable::Both => model.control.sync,
                Enable::Cloud => SyncDirection::Down,
                Enable::Device => return None,
            };
            Some((model.name.clone(), direction))
        })
    }

    /// Where this schema's table keeps an item's model and primary key.
    pub fn item_layout(&self) -> ferry_types::ItemLayout {
        let primary = self.primary();
        ferry_types::ItemLayout {
            type_field: self.params().type_field.clone(),
            hash: primary.hash.clone(),
            sort: primary.sort.clone(),
        }
    }

    /// The model called `name`.
    pub fn model(&self, name: &str) -> Result<&Model> {
        self.models.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.models.keys().map(String::as_str).collect();
            Error::Argument(format!(
                "unknown model '{name}' (the schema has: {})",
                names.join(", ")
            ))
        })
    }
}

fn parse_json5(text: &str, place: &str) -> Result<Json> {
    json5::from_str(text)
        .map_err(|e| Error::schema(place, format!("not valid JSON5: {e}; fix the syntax")))
}

fn read_document(path: &Path) -> Result<Json> {
    let place = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::schema(&place, format!("cannot read the schema file: {e}")))?;
    parse_json5(&text, &place)
}

/// Merges `part` into `base`: objects key by key, anything else replaces.
fn merge(base: &mut Json, part: Json) {
    match (base, part) {
        (Json::Object(base), Json::Object(part)) => {
            for (key, value) in part {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, part) => *base = part,
    }
}

fn check_version(root: &Map<String, Json>) -> Result<()> {
    match doc::text(root, "", "version")? {
        Some(v) if !v.is_empty() => {}
        _ => {
            return Err(Error::schema(
                "version",
                "missing version: add version: '0.0.1'",
            ));
        }
    }
    match doc::text(root, "", "format")? {
        Some(format) if !format.starts_with("onetable:1.") => Err(Error::schema(
            "format",
            format!("unsupported format '{format}': Ferry reads onetable:1.x schemas"),
        )),
        _ => Ok(()),
    }
}

fn load_params(value: Option<&Json>) -> Result<Params> {
    let mut params = Params::default();
    let Some(value) = value else {
        return Ok(params);
    };
    let map = doc::object(value, "params")?;
    doc::check_keys(map, "params", PARAMS_PROPERTIES)?;
    let text = |key: &str, into: &mut String| -> Result<()> {
        if let Some(v) = doc::text(map, "params", key)? {
            *into = v.to_string();
        }
        Ok(())
    };
    text("typeField", &mut params.type_field)?;
    text("createdField", &mut params.created_field)?;
    text("updatedField", &mut params.updated_field)?;
    text("separator", &mut params.separator)?;
    params.iso_dates = doc::boolean(map, "params", "isoDates")?.unwrap_or(false);
    params.nulls = doc::boolean(map, "params", "nulls")?.unwrap_or(false);
    for accepted in ["warn", "hidden", "legacyEmpties"] {
        doc::boolean(map, "params", accepted)?;
    }
    params.timestamps = match map.get("timestamps") {
        None | Some(Json::Bool(false)) => Timestamps::default(),
        Some(Json::Bool(true)) => Timestamps {
            created: true,
            updated: true,
        },
        Some(Json::String(s)) if s == "create" => Timestamps {
            created: true,
            updated: false,
        },
        Some(Json::String(s)) if s == "update" => Timestamps {
            created: false,
            updated: true,
        },
        Some(other) => {
            return Err(Error::schema(
                at("params", "timestamps"),
                format!("expected true, false, 'create' or 'update', got {other}"),
            ));
        }
    };
    Ok(params)
}
