//! The table's indexes: the primary key, global and local secondary indexes.

use serde_json::{Map, Value as Json};

use crate::doc::{self, at};
use crate::{Error, Result};

pub use ferry_types::table::{Index, IndexKind, Projection};

/// Local secondary indexes a table may have. Source: DynamoDB.
pub const LOCAL_INDEXES_MAX: usize = 5;

/// Loads `indexes`: primary first, then the others in name order.
pub(crate) fn load(value: Option<&Json>) -> Result<Vec<Index>> {
    let value = value.ok_or_else(|| {
        Error::schema(
            "indexes",
            "missing indexes: add indexes: {primary: {hash: 'pk', sort: 'sk'}}",
        )
    })?;
    let map = doc::object(value, "indexes")?;
    let primary = map.get("primary").ok_or_else(|| {
        Error::schema(
            "indexes.primary",
            "missing primary index: add primary: {hash: 'pk', sort: 'sk'}",
        )
    })?;
    let primary = load_primary(primary)?;
    let mut others: Vec<Index> = Vec::new();
    for (name, def) in map.iter().filter(|(name, _)| *name != "primary") {
        others.push(load_secondary(name, def, &primary)?);
    }
    let locals = others.iter().filter(|i| i.kind == IndexKind::Local).count();
    if locals > LOCAL_INDEXES_MAX {
        return Err(Error::schema(
            "indexes",
            format!(
                "{locals} local indexes: DynamoDB allows at most {LOCAL_INDEXES_MAX}; make some of them global"
            ),
        ));
    }
    others.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(std::iter::once(primary).chain(others).collect())
}

fn load_primary(value: &Json) -> Result<Index> {
    let place = "indexes.primary";
    let map = doc::object(value, place)?;
    doc::check_keys(map, place, &["hash", "sort"])?;
    Ok(Index {
        name: "primary".to_string(),
        hash: required_text(map, place, "hash")?,
        sort: doc::text(map, place, "sort")?.map(str::to_string),
        kind: IndexKind::Primary,
        project: Projection::All,
    })
}

fn load_secondary(name: &str, value: &Json, primary: &Index) -> Result<Index> {
    let place = at("indexes", name);
    let map = doc::object(value, &place)?;
    doc::check_keys(map, &place, &["hash", "sort", "project", "type"])?;
    let kind = match doc::choice(map, &place, "type", &["global", "local"])? {
        Some("local") => IndexKind::Local,
        _ => IndexKind::Global,
    };
    let sort = doc::text(map, &place, "sort")?.map(str::to_string);
    let hash = match kind {
        IndexKind::Local => local_hash(map, &place, primary, sort.is_some())?,
        _ => required_text(map, &place, "hash")?,
    };
    let mut index = Index {
        name: name.to_string(),
        hash,
        sort,
        kind,
        project: Projection::All,
    };
    index.project = projection(map.get("project"), &at(&place, "project"), &index, primary)?;
    Ok(index)
}

/// An LSI shares the primary hash key and must have its own sort key.
fn local_hash(
    map: &Map<String, Json>,
    place: &str,
    primary: &Index,
    has_sort: bool,
) -> Result<String> {
    if !has_sort {
        return Err(Error::schema(
            at(place, "sort"),
            "a local index needs a sort key: add sort: 'attr'",
        ));
    }
    match doc::text(map, place, "hash")? {
        Some(hash) if hash != primary.hash => Err(Error::schema(
            at(place, "hash"),
            format!(
                "a local index uses the primary hash key '{}': remove hash or set it to that",
                primary.hash
            ),
        )),
        _ => Ok(primary.hash.clone()),
    }
}

fn projection(
    value: Option<&Json>,
    place: &str,
    index: &Index,
    primary: &Index,
) -> Result<Projection> {
    match value {
        None => Ok(Projection::All),
        Some(Json::String(s)) if s == "all" => Ok(Projection::All),
        Some(Json::String(s)) if s == "keys" => Ok(Projection::Keys),
        Some(Json::Array(list)) => {
            let is_key = |attr: &str| index.keys().chain(primary.keys()).any(|k| k == attr);
            let mut attrs = Vec::new();
            for item in list {
                let attr = item.as_str().ok_or_else(|| {
                    Error::schema(place, format!("expected attribute names, got {item}"))
                })?;
                if !is_key(attr) && !attrs.iter().any(|a| a == attr) {
                    attrs.push(attr.to_string());
                }
            }
            Ok(Projection::Attrs(attrs))
        }
        Some(other) => Err(Error::schema(
            place,
            format!("expected 'all', 'keys' or a list of attribute names, got {other}"),
        )),
    }
}

fn required_text(map: &Map<String, Json>, place: &str, key: &str) -> Result<String> {
    match doc::text(map, place, key)? {
        Some(text) if !text.is_empty() => Ok(text.to_string()),
        _ => Err(Error::schema(
            at(place, key),
            format!("missing {key} key attribute: add {key}: 'attr'"),
        )),
    }
}
