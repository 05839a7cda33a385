//! Cloud mode on DynamoDB: the table's rows for `ferry_service::Service`, which gives
//! every operation its meaning (as on a device: the schema prepares each item, `crypt`
//! fields are sealed, every write carries a version, a scope and a feed position, so the
//! devices receive it).
//!
//! A row is read strongly consistent; a write lands only while the row is as read (`_ver`
//! unchanged, or still absent), with a version past it: a concurrent write makes it fail
//! with `ConditionalCheckFailed` rather than be lost. `find` queries the table or an index.

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use ferry_journal::Change;
use ferry_schema::{Crypto, KeyQuery, Model, Schema, SortCondition};
use ferry_service::{CloudFind, Rows, Seen, Service};
use ferry_types::{Item, Key, Value, Version};
use serde_json::{Map, Value as Json};

use crate::attrs::{AttrMap, from_attrs, to_attr, to_attrs};
use crate::error::{Error, Failure, Result};
use crate::layout::{DEL, Layout, SCOPE, VER, without_hidden};
use crate::table::{Settings, Table};
use crate::writer::{Writer, attempt_timeout};

/// Cloud mode on a DynamoDB table.
pub type CloudReplica = Service<DynamoRows>;

/// The table's rows, written as the writer's replica.
pub struct DynamoRows {
    writer: Writer,
    settings: Settings,
}

impl DynamoRows {
    /// Opens the table (its settings) for `writer`'s replica.
    async fn open(writer: Writer) -> Result<DynamoRows> {
        let table = Table {
            dynamo: &writer.dynamo,
            name: &writer.table,
            schema: &writer.schema,
        };
        let settings = table.settings().await?;
        Ok(DynamoRows { writer, settings })
    }

    /// Cloud mode on the table for `writer`'s replica; a schema with crypt fields needs
    /// `crypto`.
    pub async fn cloud_replica(writer: Writer, crypto: Option<Crypto>) -> Result<CloudReplica> {
        let schema = std::sync::Arc::clone(&writer.schema);
        Service::new(DynamoRows::open(writer).await?, schema, crypto)
    }
}

impl Rows for DynamoRows {
    type Row = AttrMap;
    type Error = Error;

    async fn read(&self, key: &Key) -> Result<Option<AttrMap>> {
        Ok(self.writer.read_row(key).await?)
    }

    fn seen(&self, row: &AttrMap) -> Result<Seen> {
        let scope = match row.get(SCOPE) {
            Some(AttributeValue::S(scope)) => Some(scope.clone()),
            _ => None,
        };
        let item = without_hidden(from_attrs(row)?);
        let type_field = &self.writer.layout.item.type_field;
        Ok(Seen {
            version: Layout::version_of(row),
            model: item
                .get(type_field)
                .and_then(Value::as_str)
                .map(str::to_string),
            scope,
            item: (!row.contains_key(DEL)).then_some(item),
        })
    }

    /// Lands `change` by the write rule, and only over the row as read.
    async fn write(&self, change: Change, seen: Option<&AttrMap>) -> Result<()> {
        let layout = &self.writer.layout;
        let (model, key) = (change.model.clone(), change.key.clone());
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
            .and_then(|()| ferry_cloud::bounded(&change, self.now_ms()))
            .and_then(
                |()| match ferry_cloud::against(held.as_ref(), &change, &service, models) {
                    ferry_cloud::Decision::Refused(refusal) => Err(refusal),
                    _ => Ok(()),
                },
            );
        if let Err(refusal) = admitted {
            let refusal = format!("{model} {key}: {refusal}");
            return Err(ferry_service::Error::refused("Refused", refusal).into());
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
                message: format!("no answer in time: {model} {key} may or may not be written"),
            })?;
        match answer {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    let message =
                        format!("{model} {key} changed meanwhile: read it again and retry");
                    Err(ferry_service::Error::refused("ConditionalCheckFailed", message).into())
                }
                _ => Err(Failure::of("PutItem", &e).into()),
            },
        }
    }

    fn version_past(&self, over: Option<&Version>) -> Result<Version> {
        self.writer.fresh_version(over.map(|v| v.hlc))
    }

    /// The server's time (epoch ms), as the table's clock reckons it.
    fn now_ms(&self) -> u64 {
        self.writer.dynamo.clock.now_ms()
    }

    /// Queries the table or the index by the key condition, with the model and equality
    /// filters, a page at a time (`next` is DynamoDB's `LastEvaluatedKey`, opaque).
    async fn find(
        &self,
        schema: &Schema,
        model: &Model,
        query: &KeyQuery,
        options: &CloudFind<'_>,
    ) -> Result<(Vec<Item>, Option<String>)> {
        let CloudFind {
            limit,
            next,
            reverse,
            ..
        } = *options;
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
            .map(|row| Ok(without_hidden(from_attrs(row)?)))
            .collect::<Result<_>>()?;
        let next = answer.last_evaluated_key().map(encode_cursor).transpose()?;
        Ok((items, next))
    }
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
