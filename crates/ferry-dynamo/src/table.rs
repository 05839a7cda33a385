//! The table from the schema: create it (primary key, GSIs and LSIs with their
//! projections, the sync GSI, TTL on `_ttl`, the settings item) or check that it matches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    LocalSecondaryIndex, Projection as DynamoProjection, ProjectionType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableDescription, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use ferry_schema::{FieldType, Index, IndexKind, Projection, Schema};

use crate::client::Dynamo;
use crate::error::{Error, Failure, FailureKind, Result};
use crate::layout::{Layout, SCOPE, SEQ, SYNC_INDEX, TTL};

/// The feed window W (docs/design.md section 7 rule 2) of a new table.
pub const WINDOW_MS_DEFAULT: u64 = 10_000;
/// The horizon of a new table: how long tombstones live (docs/design.md section 6).
pub const HORIZON_MS_DEFAULT: u64 = ferry_cloud::defaults::HORIZON_MS;
/// A horizon must outlast this many windows, or every catch-up would expire.
const HORIZON_WINDOWS_MIN: u64 = 4;
/// The smallest window: DynamoDB's `Date` tells whole seconds, so writers' clocks agree
/// only to about a second, and an attempt needs W/2 to land.
pub const WINDOW_MS_MIN: u64 = 2_000;
/// The settings item's format.
const SETTINGS_FORMAT: u64 = 1;
/// How often to ask whether the table is active yet.
const ACTIVE_POLL: Duration = Duration::from_millis(250);
/// How long to wait for it.
const ACTIVE_WAIT_MAX: Duration = Duration::from_secs(600);

/// The table settings every replica reads at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long tombstones live, and how old a cursor may be before its scope resyncs.
    pub horizon_ms: u64,
    /// The feed window W: how late a write may become visible.
    pub window_ms: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            horizon_ms: HORIZON_MS_DEFAULT,
            window_ms: WINDOW_MS_DEFAULT,
        }
    }
}

impl Settings {
    /// Checks that the horizon outlasts the window enough for catch-up to work.
    pub fn validate(self) -> Result<Settings> {
        if self.window_ms < WINDOW_MS_MIN || self.horizon_ms < self.window_ms * HORIZON_WINDOWS_MIN
        {
            return Err(Error::Argument(format!(
                "a horizon of {} ms with a window of {} ms: the window must be at least \
                 {WINDOW_MS_MIN} ms and the horizon at least {HORIZON_WINDOWS_MIN} windows",
                self.horizon_ms, self.window_ms
            )));
        }
        Ok(self)
    }
}

/// Whether a new table has a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// New and old images, which the follower reads (the default).
    ForFollower,
    /// None: no follower will run (DynamoDB Local slows down with a stream).
    Off,
}

/// A table of `schema` in DynamoDB.
#[derive(Debug, Clone)]
pub struct Table<'a> {
    /// The client.
    pub dynamo: &'a Dynamo,
    /// The table's name.
    pub name: &'a str,
    /// The schema the table serves.
    pub schema: &'a Schema,
}

impl Table<'_> {
    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Table {
            table: self.name.to_string(),
            reason: reason.into(),
        }
    }

    /// Creates the table, waits until it and its indexes are active (telling `progress`
    /// what it waits for), turns on TTL and writes the settings item. An existing table is
    /// checked instead, and must match.
    pub async fn create(
        &self,
        settings: Settings,
        stream: Stream,
        progress: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let settings = settings.validate()?;
        if self.describe().await?.is_some() {
            let differences = self.check().await?;
            if !differences.is_empty() {
                return Err(self.error(format!(
                    "exists and does not match the schema: {}",
                    differences.join("; ")
                )));
            }
            progress(&format!(
                "table {} exists and matches the schema",
                self.name
            ));
            return Ok(());
        }
        let wanted = Wanted::of(self.schema);
        let mut request = (self.dynamo.client.create_table())
            .table_name(self.name)
            .billing_mode(BillingMode::PayPerRequest)
            .set_stream_specification(match stream {
                Stream::ForFollower => Some(stream_specification()?),
                Stream::Off => None,
            })
            .set_key_schema(Some(key_schema(
                &wanted.primary.hash,
                wanted.primary.sort.as_deref(),
            )))
            .set_attribute_definitions(Some(wanted.attribute_definitions()));
        for index in wanted.indexes.values() {
            let keys = key_schema(&index.hash, index.sort.as_deref());
            let projection = projection(&index.project);
            request = match index.kind {
                IndexKind::Local => request.local_secondary_indexes(
                    LocalSecondaryIndex::builder()
                        .index_name(&index.name)
                        .set_key_schema(Some(keys))
                        .projection(projection)
                        .build()
                        .map_err(|e| self.error(e.to_string()))?,
                ),
                _ => request.global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(&index.name)
                        .set_key_schema(Some(keys))
                        .projection(projection)
                        .build()
                        .map_err(|e| self.error(e.to_string()))?,
                ),
            };
        }
        request
            .send()
            .await
            .map_err(|e| Failure::of("CreateTable", &e))?;
        progress(&format!("creating table {}", self.name));
        self.wait_active(progress).await?;
        let ttl = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(TTL)
            .build()
            .map_err(|e| self.error(e.to_string()))?;
        (self.dynamo.client.update_time_to_live())
            .table_name(self.name)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| Failure::of("UpdateTimeToLive", &e))?;
        self.write_settings(settings).await?;
        progress(&format!(
            "table {} is active (horizon {} s, window {} ms)",
            self.name,
            settings.horizon_ms / 1000,
            settings.window_ms
        ));
        Ok(())
    }

    /// Polls until the table and every index are active.
    async fn wait_active(&self, progress: &mut dyn FnMut(&str)) -> Result<()> {
        let started = Instant::now();
        let mut last = String::new();
        loop {
            let table = self
                .describe()
                .await?
                .ok_or_else(|| self.error("vanished while being created"))?;
            let waiting: Vec<String> = std::iter::once(("table", table.table_status().cloned()))
                .filter(|(_, status)| status.as_ref() != Some(&TableStatus::Active))
                .map(|(what, status)| {
                    format!(
                        "{what} {}",
                        status.map_or("?".into(), |s| s.as_str().to_string())
                    )
                })
                .chain(table.global_secondary_indexes().iter().filter_map(|index| {
                    let status = index.index_status()?;
                    (status != &IndexStatus::Active).then(|| {
                        format!(
                            "index {} {}",
                            index.index_name().unwrap_or("?"),
                            status.as_str()
                        )
                    })
                }))
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            let line = format!(
                "waiting for {} ({} s)",
                waiting.join(", "),
                started.elapsed().as_secs()
            );
            if line != last {
                progress(&line);
                last = line;
            }
            if started.elapsed() > ACTIVE_WAIT_MAX {
                return Err(self.error(format!(
                    "is not active after {} s",
                    ACTIVE_WAIT_MAX.as_secs()
                )));
            }
            tokio::time::sleep(ACTIVE_POLL).await;
        }
    }

    async fn describe(&self) -> Result<Option<TableDescription>> {
        match self
            .dynamo
            .client
            .describe_table()
            .table_name(self.name)
            .send()
            .await
        {
            Ok(output) => Ok(output.table),
            Err(e) => match e.as_service_error() {
                Some(DescribeTableError::ResourceNotFoundException(_)) => Ok(None),
                _ => Err(Failure::of("DescribeTable", &e).into()),
            },
        }
    }

    /// What differs between the table and the schema, one line each; empty when it matches.
    pub async fn check(&self) -> Result<Vec<String>> {
        let Some(table) = self.describe().await? else {
            return Err(self.error("does not exist: create it with `ferry table create`"));
        };
        let wanted = Wanted::of(self.schema);
        let mut differences = Vec::new();
        let types: BTreeMap<&str, &ScalarAttributeType> = (table.attribute_definitions().iter())
            .map(|d| (d.attribute_name(), d.attribute_type()))
            .collect();
        let (hash, sort) = keys_of(table.key_schema());
        let primary = &wanted.primary;
        if hash.as_deref() != Some(primary.hash.as_str()) || sort != primary.sort {
            differences.push(format!(
                "primary key is {} but the schema wants {}",
                show_keys(hash.as_deref(), sort.as_deref()),
                show_keys(Some(&primary.hash), primary.sort.as_deref())
            ));
        }
        let mut found: BTreeMap<String, (Option<String>, Option<String>, Projection)> =
            BTreeMap::new();
        for index in table.global_secondary_indexes() {
            let (h, s) = keys_of(index.key_schema());
            found.insert(
                index.index_name().unwrap_or_default().to_string(),
                (h, s, projection_of(index.projection())),
            );
        }
        for index in table.local_secondary_indexes() {
            let (h, s) = keys_of(index.key_schema());
            found.insert(
                index.index_name().unwrap_or_default().to_string(),
                (h, s, projection_of(index.projection())),
            );
        }
        for (name, index) in &wanted.indexes {
            match found.remove(name) {
                None => differences.push(format!("index {name} is missing")),
                Some((h, s, project)) => {
                    if h.as_deref() != Some(index.hash.as_str()) || s != index.sort {
                        differences.push(format!(
                            "index {name} has keys {} but the schema wants {}",
                            show_keys(h.as_deref(), s.as_deref()),
                            show_keys(Some(&index.hash), index.sort.as_deref())
                        ));
                    }
                    if !same_projection(&project, &index.project) {
                        differences.push(format!(
                            "index {name} projects {project:?} but the schema wants {:?}",
                            index.project
                        ));
                    }
                }
            }
        }
        for name in found.keys() {
            differences.push(format!("index {name} is not in the schema"));
        }
        for (attr, ty) in &wanted.attributes {
            if let Some(found) = types.get(attr.as_str()).filter(|found| **found != ty) {
                differences.push(format!(
                    "attribute {attr} is of type {} but the schema wants {}",
                    found.as_str(),
                    ty.as_str()
                ));
            }
        }
        let ttl = (self.dynamo.client.describe_time_to_live())
            .table_name(self.name)
            .send()
            .await
            .map_err(|e| Failure::of("DescribeTimeToLive", &e))?;
        let ttl = ttl.time_to_live_description();
        let on = ttl
            .and_then(|t| t.time_to_live_status())
            .is_some_and(|s| matches!(s, TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
        if !on || ttl.and_then(|t| t.attribute_name()) != Some(TTL) {
            differences.push(format!("TTL is not enabled on {TTL}"));
        }
        if let Err(e) = self.settings().await {
            differences.push(e.to_string());
        }
        Ok(differences)
    }

    /// Writes the settings item.
    async fn write_settings(&self, settings: Settings) -> Result<()> {
        let layout = Layout::new(self.schema);
        let number = |n: u64| AttributeValue::N(n.to_string());
        (self.dynamo.client.put_item())
            .table_name(self.name)
            .set_item(Some(layout.settings_key()))
            .item("horizon_ms", number(settings.horizon_ms))
            .item("window_ms", number(settings.window_ms))
            .item("format", number(SETTINGS_FORMAT))
            .send()
            .await
            .map_err(|e| Failure::of("PutItem", &e))?;
        Ok(())
    }

    /// Reads the settings item (strongly consistent).
    pub async fn settings(&self) -> Result<Settings> {
        let layout = Layout::new(self.schema);
        let output = (self.dynamo.client.get_item())
            .table_name(self.name)
            .set_key(Some(layout.settings_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| match Failure::of("GetItem", &e) {
                f if f.kind == FailureKind::NoTable => {
                    self.error("does not exist: create it with `ferry table create`")
                }
                f => f.into(),
            })?;
        let item = output.item.ok_or_else(|| {
            self.error("has no Ferry settings item: run `ferry table create` on it")
        })?;
        let number = |name: &str| match item.get(name) {
            Some(AttributeValue::N(n)) => n.parse::<u64>().ok(),
            _ => None,
        };
        match (number("horizon_ms"), number("window_ms")) {
            (Some(horizon_ms), Some(window_ms)) => Settings {
                horizon_ms,
                window_ms,
            }
            .validate()
            .map_err(|e| self.error(format!("has Ferry settings Ferry cannot work with: {e}"))),
            _ => Err(self.error("has a Ferry settings item without horizon_ms or window_ms")),
        }
    }
}

/// The table the schema wants.
struct Wanted {
    primary: Index,
    indexes: BTreeMap<String, Index>,
    attributes: BTreeMap<String, ScalarAttributeType>,
}

impl Wanted {
    fn of(schema: &Schema) -> Wanted {
        let mut indexes: BTreeMap<String, Index> = (schema.indexes().iter())
            .filter(|index| index.kind != IndexKind::Primary)
            .map(|index| (index.name.clone(), index.clone()))
            .collect();
        let sync = Index {
            name: SYNC_INDEX.to_string(),
            hash: SCOPE.to_string(),
            sort: Some(SEQ.to_string()),
            kind: IndexKind::Global,
            project: Projection::All,
        };
        indexes.insert(sync.name.clone(), sync);
        let primary = schema.primary().clone();
        let key_attrs: BTreeSet<&str> = std::iter::once(&primary)
            .chain(indexes.values())
            .flat_map(|index| index.keys())
            .collect();
        let attributes = (key_attrs.into_iter())
            .map(|attr| (attr.to_string(), attribute_type(schema, attr)))
            .collect();
        Wanted {
            primary,
            indexes,
            attributes,
        }
    }

    fn attribute_definitions(&self) -> Vec<AttributeDefinition> {
        (self.attributes.iter())
            .filter_map(|(name, ty)| {
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ty.clone())
                    .build()
                    .ok()
            })
            .collect()
    }
}

/// `N` where a model maps the attribute to a number field, else `S` (OneTable's keys are
/// text templates).
fn attribute_type(schema: &Schema, attr: &str) -> ScalarAttributeType {
    let number = schema
        .models()
        .filter_map(|model| model.field_for_attr(attr))
        .any(|field| field.ty == FieldType::Number);
    match number {
        true => ScalarAttributeType::N,
        false => ScalarAttributeType::S,
    }
}

/// New and old images: the follower tells foreign writes from Ferry's by comparing them.
fn stream_specification() -> Result<StreamSpecification> {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewAndOldImages)
        .build()
        .map_err(|e| Error::Argument(e.to_string()))
}

fn key_schema(hash: &str, sort: Option<&str>) -> Vec<KeySchemaElement> {
    let element = |name: &str, ty| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(ty)
            .build()
            .ok()
    };
    std::iter::once(element(hash, KeyType::Hash))
        .chain(sort.map(|sort| element(sort, KeyType::Range)))
        .flatten()
        .collect()
}

fn keys_of(schema: &[KeySchemaElement]) -> (Option<String>, Option<String>) {
    let find = |ty: KeyType| {
        (schema.iter())
            .find(|k| k.key_type() == &ty)
            .map(|k| k.attribute_name().to_string())
    };
    (find(KeyType::Hash), find(KeyType::Range))
}

fn show_keys(hash: Option<&str>, sort: Option<&str>) -> String {
    match sort {
        Some(sort) => format!("({}, {sort})", hash.unwrap_or("none")),
        None => format!("({})", hash.unwrap_or("none")),
    }
}

fn projection(project: &Projection) -> DynamoProjection {
    let builder = DynamoProjection::builder();
    match project {
        Projection::All => builder.projection_type(ProjectionType::All),
        Projection::Keys => builder.projection_type(ProjectionType::KeysOnly),
        Projection::Attrs(attrs) => builder
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(attrs.clone())),
    }
    .build()
}

fn projection_of(found: Option<&DynamoProjection>) -> Projection {
    match found.and_then(|p| p.projection_type()) {
        Some(ProjectionType::KeysOnly) => Projection::Keys,
        Some(ProjectionType::Include) => Projection::Attrs(
            found
                .map(|p| p.non_key_attributes().to_vec())
                .unwrap_or_default(),
        ),
        _ => Projection::All,
    }
}

fn same_projection(found: &Projection, wanted: &Projection) -> bool {
    match (found, wanted) {
        (Projection::Attrs(a), Projection::Attrs(b)) => {
            a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
        }
        (a, b) => a == b,
    }
}
