//! Cloud mode: a service or an operator reads and writes the table as a replica of its
//! own, with no local store, under a device's rules: the schema prepares every item (keys,
//! templates, defaults, validation, timestamps), `crypt` fields are sealed, and every write
//! carries a version, a scope and a feed position, so the devices receive it.
//!
//! Each write reads the row first (strongly consistent) and lands only while the row is
//! as read (`_ver` unchanged), with a version past it: a concurrent write makes it fail
//! with `ConditionalCheckFailed` rather than be lost.

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use ferry_journal::{Change, ChangeOp};
use ferry_schema::{Context, Crypto, Model, PutMode, SortCondition, UpdateOps};
use ferry_types::{Item, Key, Value};
use serde_json::{Map, Value as Json};

use crate::attrs::{AttrMap, from_attrs, to_attr, to_attrs};
use crate::error::{Error, Failure, Result};
use crate::layout::{DEL, Layout, SCOPE, VER, without_hidden};
use crate::table::{Settings, Table};
use crate::writer::{Writer, attempt_timeout};

/// The table as a cloud replica.
pub struct CloudReplica {
    writer: Writer,
    settings: Settings,
    crypto: Option<Crypto>,
    context: Context,
}

/// How a cloud `find` reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloudFind<'a> {
    /// A secondary index (else the primary key).
    pub index: Option<&'a str>,
    /// Most items to read.
    pub limit: Option<usize>,
    /// The cursor a previous page gave.
    pub next: Option<&'a str>,
    /// Descending sort key order.
    pub reverse: bool,
}

/// A page of a cloud `find`.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudPage {
    /// The items, as a device's `find` returns them.
    pub items: Vec<Json>,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
}

impl CloudReplica {
    /// Opens the table (its settings) for `writer`'s replica; a schema with crypt fields
    /// needs `crypto`.
    pub async fn open(writer: Writer, crypto: Option<Crypto>) -> Result<CloudReplica> {
        if let (None, Some(field)) = (&crypto, writer.schema.crypt_field()) {
            return Err(Error::Argument(format!(
                "{field} is a crypt field but no key was given (OneTable's crypto: \
                 {{primary: {{cipher: 'aes-256-gcm', password: ...}}}})"
            )));
        }
        let table = Table {
            dynamo: &writer.dynamo,
            name: &writer.table,
            schema: &writer.schema,
        };
        let settings = table.settings().await?;
        Ok(CloudReplica {
            writer,
            settings,
            crypto,
            context: Context::new(),
        })
    }

    fn model(&self, name: &str) -> Result<&Model> {
        Ok(self.writer.schema.model(name)?)
    }

    /// Creates an item; fails with `ConditionalCheckFailed` if it exists.
    pub async fn create(&self, model: &str, props: &Json) -> Result<Json> {
        let model = self.model(model)?;
        let schema = &self.writer.schema;
        let item = model.prepare_put(
            schema,
            object(props)?,
            &self.context,
            self.now_ms(),
            PutMode::Create,
        )?;
        let key = self.writer.layout.key_of(&item)?;
        let seen = self.read(&key).await?;
        if seen.as_ref().is_some_and(|row| !row.contains_key(DEL)) {
            return Err(refused(
                "ConditionalCheckFailed",
                format!("{} {key} already exists", model.name),
            ));
        }
        self.store(model, &key, item, seen.as_ref()).await
    }

    /// Reads an item by its key; `None` when it is absent or deleted.
    pub async fn get(&self, model: &str, props: &Json, hidden: bool) -> Result<Option<Json>> {
        let model = self.model(model)?;
        let key = self.full_key(model, object(props)?)?;
        let row = self.read(&key).await?;
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
        let seen = self.read(&key).await?;
        let existing = self.live(model, seen.clone())?;
        if existing.is_none() && !upsert {
            return Err(refused(
                "NotFoundError",
                format!("{} {key} does not exist", model.name),
            ));
        }
        let existing = existing.map(|item| model.open_owned(item, self.crypto.as_ref()));
        let schema = &self.writer.schema;
        let item = model.prepare_update(
            schema,
            existing.as_ref(),
            props,
            ops,
            &self.context,
            self.now_ms(),
        )?;
        if self.writer.layout.key_of(&item)? != key {
            return Err(Error::Argument(format!(
                "{}: update cannot change the primary key",
                model.name
            )));
        }
        self.store(model, &key, item, seen.as_ref()).await
    }

    /// Removes an item (a tombstone takes its place, so devices remove it too); returns it.
    pub async fn remove(&self, model: &str, props: &Json) -> Result<Option<Json>> {
        let model = self.model(model)?;
        let key = self.full_key(model, object(props)?)?;
        let seen = self.read(&key).await?;
        let Some(item) = self.live(model, seen.clone())? else {
            return Ok(None);
        };
        self.write(model, &key, None, seen.as_ref()).await?;
        Ok(Some(self.shape(model, &item, false)))
    }

    /// Finds items by key condition (on the primary key or `index`) and equality filters,
    /// as a device's `find` does; `next` continues a previous page, `reverse` reads the
    /// sort key descending.
    pub async fn find(
        &self,
        model: &str,
        props: &Json,
        options: &CloudFind<'_>,
    ) -> Result<CloudPage> {
        let CloudFind {
            index,
            limit,
            next,
            reverse,
        } = *options;
        let model = self.model(model)?;
        let schema = &self.writer.schema;
        let query = model.key_query(schema, object(props)?, &self.context, index)?;
        let index = schema.index(&query.index)?;
        let mut names = Map::new();
        let mut values = AttrMap::new();
        let mut name = |attr: &str| {
            let placeholder = format!("#n{}", names.len());
            names.insert(placeholder.clone(), Json::String(attr.to_string()));
            placeholder
        };
        let mut value = |v: AttributeValue| {
            let placeholder = format!(":v{}", values.len());
            values.insert(placeholder.clone(), v);
            placeholder
        };
        let mut condition = format!("{} = {}", name(&index.hash), value(to_attr(&query.hash)));
        if let (Some(sort), Some(attr)) = (&query.sort, &index.sort) {
            let n = name(attr);
            let part = match sort {
                SortCondition::Eq(v) => format!("{n} = {}", value(to_attr(v))),
                SortCondition::Lt(v) => format!("{n} < {}", value(to_attr(v))),
                SortCondition::Le(v) => format!("{n} <= {}", value(to_attr(v))),
                SortCondition::Gt(v) => format!("{n} > {}", value(to_attr(v))),
                SortCondition::Ge(v) => format!("{n} >= {}", value(to_attr(v))),
                SortCondition::Between(a, b) => {
                    format!(
                        "{n} BETWEEN {} AND {}",
                        value(to_attr(a)),
                        value(to_attr(b))
                    )
                }
                SortCondition::BeginsWith(v) => format!("begins_with({n}, {})", value(to_attr(v))),
            };
            condition = format!("{condition} AND {part}");
        }
        let type_field = &self.writer.layout.item.type_field;
        let mut filters = vec![
            format!(
                "{} = {}",
                name(type_field),
                value(AttributeValue::S(model.name.clone()))
            ),
            format!("attribute_not_exists({})", name(DEL)),
        ];
        for (attr, v) in &query.filters {
            let path: Vec<String> = attr.split('.').map(&mut name).collect();
            filters.push(format!("{} = {}", path.join("."), value(to_attr(v))));
        }
        let names = names
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
            .collect();
        let mut request = (self.writer.dynamo.client.query())
            .table_name(&self.writer.table)
            .key_condition_expression(condition)
            .filter_expression(filters.join(" AND "))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .set_exclusive_start_key(next.map(decode_cursor).transpose()?);
        if index.name != "primary" {
            request = request.index_name(&index.name);
        }
        if reverse {
            request = request.scan_index_forward(false);
        }
        if let Some(limit) = limit {
            request = request.limit(limit.clamp(1, i32::MAX as usize) as i32);
        }
        let answer = request.send().await.map_err(|e| Failure::of("Query", &e))?;
        let items = (answer.items())
            .iter()
            .map(|row| Ok(self.shape(model, &without_hidden(from_attrs(row)?), false)))
            .collect::<Result<_>>()?;
        let next = answer.last_evaluated_key().map(encode_cursor).transpose()?;
        Ok(CloudPage { items, next })
    }

    /// The row of `key`, tombstones included (strongly consistent).
    async fn read(&self, key: &Key) -> Result<Option<AttrMap>> {
        Ok(self.writer.read_row(key).await?)
    }

    /// The item of a row of `model`, unless it is a tombstone.
    fn live(&self, model: &Model, row: Option<AttrMap>) -> Result<Option<Item>> {
        let Some(row) = row.filter(|row| !row.contains_key(DEL)) else {
            return Ok(None);
        };
        let item = without_hidden(from_attrs(&row)?);
        let type_field = &self.writer.layout.item.type_field;
        match item.get(type_field).and_then(Value::as_str) {
            Some(name) if name == model.name => Ok(Some(item)),
            other => Err(Error::Argument(format!(
                "the item at that key is a {}, not a {}",
                other.unwrap_or("row of no model"),
                model.name
            ))),
        }
    }

    /// Writes `item` (or, for `None`, a tombstone) over `seen`, the row as read, with a
    /// version past it.
    async fn write(
        &self,
        model: &Model,
        key: &Key,
        item: Option<&Item>,
        seen: Option<&AttrMap>,
    ) -> Result<()> {
        let layout = &self.writer.layout;
        let over = seen.and_then(Layout::version_of);
        let version = self.writer.fresh_version(over.as_ref().map(|v| v.hlc))?;
        let scope_of = |item: &Item| model.scope_of(item, &self.context).map_err(Error::Argument);
        let (op, scope, item) = match item {
            Some(item) => {
                let mut view = model.cloud_view(item);
                view.insert(VER.into(), Value::S(version.to_text()));
                (ChangeOp::Put, scope_of(item)?, Some(view))
            }
            // The tombstone goes where the item was: the devices that have it read there.
            None => {
                let recorded = match seen.and_then(|row| row.get(SCOPE)) {
                    Some(AttributeValue::S(scope)) => Some(scope.clone()),
                    _ => None,
                };
                let old = seen
                    .map(from_attrs)
                    .transpose()?
                    .map(without_hidden)
                    .unwrap_or_default();
                let scope = match recorded {
                    Some(scope) => scope,
                    None => scope_of(&old)?,
                };
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
            base: over,
        };
        // The write rule holds for cloud mode too (the model's direction for a service, the
        // item, the version's bound, the held row's scope); its condition is stricter than
        // the rule's: the row must still be the one read.
        let service = ferry_cloud::Grant::service(&self.writer.id, None);
        let models = &self.writer.models;
        // Against the row as read, which the condition holds to: a key of a downloading
        // model stays in its scope (the rule's `Move`).
        let held = (seen.filter(|row| Layout::version_of(row).is_some()))
            .and_then(|row| layout.change_of(row).ok())
            .map(|(_, held)| held);
        let admitted = ferry_cloud::admit(&change, &service, models)
            .and_then(|()| ferry_cloud::bounded(&change, self.now_ms() as u64))
            .and_then(
                |()| match ferry_cloud::against(held.as_ref(), &change, &service, models) {
                    ferry_cloud::Decision::Refused(refusal) => Err(refusal),
                    _ => Ok(()),
                },
            );
        if let Err(refusal) = admitted {
            return Err(refused(
                "Refused",
                format!("{} {key}: {refusal}", model.name),
            ));
        }
        let seq = format!("{}-{}", self.writer.dynamo.clock.stamp(), self.writer.id);
        let row = layout.row(&change, &seq, &self.writer.id, self.settings.horizon_ms)?;
        let request = (self.writer.dynamo.client.put_item())
            .table_name(&self.writer.table)
            .set_item(Some(to_attrs(&row)))
            .expression_attribute_names("#h", &layout.item.hash);
        let request = match seen.and_then(|row| row.get(VER)) {
            None if seen.is_none() => request.condition_expression("attribute_not_exists(#h)"),
            None => request
                .condition_expression("attribute_exists(#h) AND attribute_not_exists(#v)")
                .expression_attribute_names("#v", VER),
            Some(seen) => request
                .condition_expression("attribute_exists(#h) AND #v = :seen")
                .expression_attribute_names("#v", VER)
                .expression_attribute_values(":seen", seen.clone()),
        };
        let answer = tokio::time::timeout(attempt_timeout(self.settings) * 2, request.send())
            .await
            .map_err(|_| Failure {
                kind: crate::FailureKind::Transient,
                operation: "PutItem",
                code: "Timeout".into(),
                message: format!(
                    "no answer in time: {} {key} may or may not be written",
                    model.name
                ),
            })?;
        match answer {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => Err(refused(
                    "ConditionalCheckFailed",
                    format!(
                        "{} {key} changed meanwhile: read it again and retry",
                        model.name
                    ),
                )),
                _ => Err(Failure::of("PutItem", &e).into()),
            },
        }
    }

    /// Seals `item`'s crypt fields and writes it over `seen`; returns it as the caller sees it.
    async fn store(
        &self,
        model: &Model,
        key: &Key,
        mut item: Item,
        seen: Option<&AttrMap>,
    ) -> Result<Json> {
        model
            .seal(&mut item, self.crypto.as_ref())
            .map_err(Error::Argument)?;
        self.write(model, key, Some(&item), seen).await?;
        Ok(self.shape(model, &item, false))
    }

    /// The server's time (epoch ms): the `created` and `updated` stamps of cloud writes.
    fn now_ms(&self) -> i64 {
        self.writer.dynamo.clock.now_ms() as i64
    }

    fn full_key(&self, model: &Model, props: &Map<String, Json>) -> Result<Key> {
        let query = model.key_query(&self.writer.schema, props, &self.context, None)?;
        query.full_key().ok_or_else(|| {
            Error::Argument(format!(
                "{}: this operation needs the full primary key; give the properties its templates use",
                model.name
            ))
        })
    }

    fn shape(&self, model: &Model, item: &Item, hidden: bool) -> Json {
        let item = model.open(item, self.crypto.as_ref());
        Json::Object(model.to_json(&ferry_types::ItemRef::of(&item), hidden))
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

/// A query's `LastEvaluatedKey` as an opaque cursor (its keys are texts or numbers).
fn encode_cursor(key: &AttrMap) -> Result<String> {
    let item = from_attrs(key)?;
    let json: Map<String, Json> = (item.into_iter())
        .map(|(name, value)| match value {
            Value::S(s) => Ok((name, serde_json::json!({ "S": s }))),
            Value::N(n) => Ok((name, serde_json::json!({ "N": n.as_str() }))),
            other => Err(Error::Item(format!(
                "a key attribute of type {}",
                other.type_name()
            ))),
        })
        .collect::<Result<_>>()?;
    Ok(BASE64.encode(Json::Object(json).to_string()))
}

fn decode_cursor(cursor: &str) -> Result<AttrMap> {
    let bad = || Error::Argument(format!("'{cursor}' is not a cursor a cloud find printed"));
    let bytes = BASE64.decode(cursor).map_err(|_| bad())?;
    let json: Map<String, Json> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    (json.into_iter())
        .map(|(name, value)| {
            let attr = match (value.get("S"), value.get("N")) {
                (Some(Json::String(s)), _) => AttributeValue::S(s.clone()),
                (_, Some(Json::String(n))) => AttributeValue::N(n.clone()),
                _ => return Err(bad()),
            };
            Ok((name, attr))
        })
        .collect()
}
