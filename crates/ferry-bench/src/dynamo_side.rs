//! `cargo xtask bench dynamo`: uploads to one DynamoDB server (DynamoDB Local, which the
//! xtask starts), side by side in one run:
//!
//! - Ferry: a device with 10k pending changes, `sync()` until every one is acknowledged
//!   (journal, engine, conditional puts with `ALL_OLD`, acknowledgements settled locally);
//! - a naive loop: one SDK `PutItem` after another, the same rows, no condition;
//! - the ceiling: the same rows as pre-built conditional puts, many in flight;
//!
//! then a new device catching up the 10k rows, and the write capacity each put consumed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry::dynamo::sdk::types::{
    BatchStatementRequest, Put, ReturnConsumedCapacity, TransactWriteItem,
};
use ferry::dynamo::{Dynamo, DynamoTransport, Endpoint, Layout, Settings, Stream, Table, to_attrs};
use ferry::journal::{Change, ChangeOp};
use ferry::types::{Hlc, Item, Key, ReplicaId, Value, Version};
use ferry::{Attach, Config, Db, Schema, SyncOptions};
use futures::StreamExt;
use serde_json::json;

/// The benchmark's schema: a `Reading` like the local benchmark's, replicated both ways in
/// one shared scope.
const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: {
        Reading: {
            pk: { type: 'string', value: 'dev#${device}' },
            sk: { type: 'string', value: 'reading#${seq}' },
            device: { type: 'string', required: true },
            seq: { type: 'string', required: true },
            temp: { type: 'number' }, humidity: { type: 'number' }, ok: { type: 'boolean' },
            note: { type: 'string' },
        },
    },
    control: { Reading: { sync: 'both', scope: '*' } },
}"#;
/// The note of every reading: 55 bytes.
const NOTE: &str = "steady reading from the north sensor, nominal, no alarm";
/// Conditional puts in flight for the ceiling.
const CEILING_IN_FLIGHT: usize = 128;
/// Writes per transaction or PartiQL batch (25: `BatchExecuteStatement`'s limit).
const GROUP: usize = 25;
/// Transactions or batches in flight.
const GROUPS_IN_FLIGHT: usize = 8;
/// Runs; the median is reported.
const ROUNDS: usize = 3;

/// One round's rates (changes per second) and costs.
struct Round {
    ferry: f64,
    naive: f64,
    ceiling: f64,
    transact: f64,
    partiql: f64,
    catch_up_s: f64,
    wcu: Option<f64>,
}

pub fn run(changes: usize) -> Result<()> {
    let url = std::env::var("FERRY_BENCH_DYNAMODB")
        .context("FERRY_BENCH_DYNAMODB is not set: run it as `cargo xtask bench dynamo`")?;
    let endpoint = Endpoint {
        url: Some(url),
        region: Some("us-east-1".into()),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dynamo = rt.block_on(Dynamo::connect(&endpoint));
    let schema = Arc::new(Schema::parse(SCHEMA)?);
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        eprintln!("round {}: {changes} changes", round + 1);
        rounds.push(one_round(&rt, &endpoint, &dynamo, &schema, changes, round)?);
    }
    let median = |pick: fn(&Round) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (ferry, naive, ceiling) = (
        median(|r| r.ferry),
        median(|r| r.naive),
        median(|r| r.ceiling),
    );
    let (transact, partiql) = (median(|r| r.transact), median(|r| r.partiql));
    println!("| {changes} changes to one DynamoDB Local | changes/s | Ferry / it |");
    println!("|---|---:|---:|");
    println!("| Ferry: `sync()` of pending changes, acknowledged | {ferry:.0} | 1.00x |");
    println!(
        "| naive loop: one `PutItem` at a time | {naive:.0} | {:.2}x |",
        ferry / naive
    );
    println!(
        "| ceiling: pre-built conditional puts, {CEILING_IN_FLIGHT} in flight | {ceiling:.0} | {:.2}x |",
        ferry / ceiling
    );
    println!(
        "| `TransactWriteItems` of {GROUP} conditional puts, {GROUPS_IN_FLIGHT} in flight | {transact:.0} | {:.2}x |",
        ferry / transact
    );
    println!(
        "| PartiQL `BatchExecuteStatement` of {GROUP} `INSERT`s, {GROUPS_IN_FLIGHT} in flight | {partiql:.0} | {:.2}x |",
        ferry / partiql
    );
    println!();
    let catch_up = median(|r| r.catch_up_s);
    println!("| catch-up of {changes} cloud changes by a new device | seconds | changes/s |");
    println!("|---|---:|---:|");
    println!(
        "| resync of the scope, pages of 500, applied locally | {catch_up:.2} | {:.0} |",
        changes as f64 / catch_up
    );
    if let Some(wcu) = rounds.iter().find_map(|r| r.wcu) {
        println!();
        println!(
            "write capacity per change (the server's ConsumedCapacity, table and sync GSI): {wcu:.2} WCU"
        );
    }
    Ok(())
}

fn one_round(
    rt: &tokio::runtime::Runtime,
    endpoint: &Endpoint,
    dynamo: &Dynamo,
    schema: &Arc<Schema>,
    changes: usize,
    round: usize,
) -> Result<Round> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let tables = ["ferry", "naive", "ceiling", "transact", "partiql"]
        .map(|what| format!("bench-{what}-{stamp}-{round}"));
    for name in &tables {
        let table = Table {
            dynamo,
            name,
            schema,
        };
        rt.block_on(table.create(Settings::default(), Stream::Off, &mut |_| {}))?;
    }

    // Ferry: the changes are pending before the transport attaches; sync() sends them all.
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), Config::with_schema((**schema).clone()))?;
    for seq in 0..changes {
        db.create("Reading", reading(seq))?;
    }
    let replica = db.status().replica;
    let transport = DynamoTransport::new(endpoint.clone(), &tables[0], schema.clone(), &replica);
    let started = Instant::now();
    db.attach(transport, SyncOptions::default())?;
    db.sync(Duration::from_secs(600))?;
    let ferry = changes as f64 / started.elapsed().as_secs_f64();
    drop(db);

    // The baselines get the SDK's own retries and no attempt timeout: the server's best.
    let client = &aws_sdk_dynamodb_client(dynamo);
    let layout = Layout::new(schema);
    let rows: Vec<_> = (0..changes)
        .map(|seq| row(&layout, seq))
        .collect::<Result<_>>()?;

    let started = Instant::now();
    rt.block_on(async {
        for row in &rows {
            client
                .put_item()
                .table_name(&tables[1])
                .set_item(Some(row.clone()))
                .send()
                .await?;
        }
        anyhow::Ok(())
    })?;
    let naive = changes as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let ceiling_table = tables[2].as_str();
    let consumed: Vec<Option<f64>> = rt.block_on(async {
        let puts = rows.iter().map(|row| {
            let version = row.get("_ver").cloned();
            async move {
                let answer = (client.put_item())
                    .table_name(ceiling_table)
                    .set_item(Some(row.clone()))
                    .condition_expression("attribute_not_exists(#h) OR #v < :v")
                    .expression_attribute_names("#h", "pk")
                    .expression_attribute_names("#v", "_ver")
                    .set_expression_attribute_values(
                        version.map(|v| [(":v".to_string(), v)].into()),
                    )
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await?;
                anyhow::Ok(answer.consumed_capacity().and_then(|c| c.capacity_units()))
            }
        });
        futures::stream::iter(puts)
            .buffer_unordered(CEILING_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()
    })?;
    let ceiling = changes as f64 / started.elapsed().as_secs_f64();
    let wcu = consumed
        .iter()
        .copied()
        .sum::<Option<f64>>()
        .map(|total| total / changes as f64);

    let transact = grouped(rt, &rows, |group| {
        let puts = group.iter().map(|row| {
            let put = Put::builder()
                .table_name(&tables[3])
                .set_item(Some(row.clone()))
                .condition_expression("attribute_not_exists(#h) OR #v < :v")
                .expression_attribute_names("#h", "pk")
                .expression_attribute_names("#v", "_ver")
                .set_expression_attribute_values(
                    row.get("_ver")
                        .map(|v| [(":v".to_string(), v.clone())].into()),
                )
                .build()?;
            anyhow::Ok(TransactWriteItem::builder().put(put).build())
        });
        let items = puts.collect::<Result<Vec<_>>>();
        async move {
            client
                .transact_write_items()
                .set_transact_items(Some(items?))
                .send()
                .await?;
            anyhow::Ok(())
        }
    })?;
    let partiql = grouped(rt, &rows, |group| {
        let statements = group.iter().map(|row| {
            let mut names: Vec<&String> = row.keys().collect();
            names.sort();
            let fields: Vec<String> = names.iter().map(|n| format!("'{n}': ?")).collect();
            BatchStatementRequest::builder()
                .statement(format!(
                    "INSERT INTO \"{}\" VALUE {{{}}}",
                    tables[4],
                    fields.join(", ")
                ))
                .set_parameters(Some(names.iter().map(|n| row[*n].clone()).collect()))
                .build()
                .map_err(anyhow::Error::from)
        });
        let statements = statements.collect::<Result<Vec<_>>>();
        async move {
            let answer = client
                .batch_execute_statement()
                .set_statements(Some(statements?))
                .send()
                .await?;
            if let Some(failed) = answer.responses().iter().find_map(|r| r.error()) {
                bail!("a PartiQL INSERT failed: {failed:?}");
            }
            anyhow::Ok(())
        }
    })?;

    // Catch-up: a new device pulls the scope the ceiling filled.
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path(), Config::with_schema((**schema).clone()))?;
    let replica = db.status().replica;
    let transport = DynamoTransport::new(endpoint.clone(), &tables[2], schema.clone(), &replica);
    let started = Instant::now();
    db.attach(transport, SyncOptions::default())?;
    db.sync(Duration::from_secs(600))?;
    let catch_up_s = started.elapsed().as_secs_f64();
    let got = db
        .find(
            "Reading",
            json!({"device": "d0"}),
            &ferry::FindOptions {
                limit: Some(changes),
                ..Default::default()
            },
        )?
        .items
        .len();
    if got != changes.div_ceil(100) {
        bail!("the new device caught up {got} readings of device d0");
    }
    Ok(Round {
        transact,
        partiql,
        ferry,
        naive,
        ceiling,
        catch_up_s,
        wcu,
    })
}

fn aws_sdk_dynamodb_client(dynamo: &Dynamo) -> ferry::dynamo::sdk::Client {
    use ferry::dynamo::sdk::config::retry::RetryConfig;
    use ferry::dynamo::sdk::config::timeout::TimeoutConfig;
    let config = (dynamo.client.config().to_builder())
        .retry_config(RetryConfig::standard().with_max_attempts(10))
        .timeout_config(TimeoutConfig::disabled())
        .build();
    ferry::dynamo::sdk::Client::from_conf(config)
}

/// The rate (rows/s) of writing `rows` in groups of [`GROUP`], [`GROUPS_IN_FLIGHT`] at once.
fn grouped<'a, F, Fut>(
    rt: &tokio::runtime::Runtime,
    rows: &'a [ferry::dynamo::AttrMap],
    write: F,
) -> Result<f64>
where
    F: Fn(&'a [ferry::dynamo::AttrMap]) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let started = Instant::now();
    rt.block_on(async {
        let writes = rows.chunks(GROUP).map(&write);
        let results: Vec<Result<()>> = futures::stream::iter(writes)
            .buffer_unordered(GROUPS_IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>>>()
    })?;
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}

/// Reading `seq`: 100 devices, like the local benchmark.
fn reading(seq: usize) -> serde_json::Value {
    json!({
        "device": format!("d{}", seq % 100),
        "seq": format!("{seq:08}"),
        "temp": 20.5 + (seq % 10) as f64,
        "humidity": 40 + (seq % 30),
        "ok": !seq.is_multiple_of(7),
        "note": NOTE,
    })
}

/// The row Ferry writes for reading `seq`: its item with `_ver`, `_src`, `_scope`, `_seq`.
fn row(layout: &Layout, seq: usize) -> Result<ferry::dynamo::AttrMap> {
    let device = format!("d{}", seq % 100);
    let pk = format!("dev#{device}");
    let sk = format!("reading#{seq:08}");
    let text = |s: &str| Value::S(s.to_string());
    let number = |n: f64| Value::N(n.to_string().parse().unwrap_or_else(|_| 0i64.into()));
    let mut item = Item::new();
    item.insert("pk".into(), text(&pk));
    item.insert("sk".into(), text(&sk));
    item.insert("_type".into(), text("Reading"));
    item.insert("device".into(), text(&device));
    item.insert("seq".into(), text(&format!("{seq:08}")));
    item.insert("temp".into(), number(20.5 + (seq % 10) as f64));
    item.insert("humidity".into(), number((40 + seq % 30) as f64));
    item.insert("ok".into(), Value::Bool(!seq.is_multiple_of(7)));
    item.insert("note".into(), text(NOTE));
    let hlc = Hlc::new(1_800_000_000_000 + seq as u64, 0);
    let change = Change {
        model: "Reading".into(),
        key: Key {
            hash: text(&pk),
            sort: Some(text(&sk)),
        },
        op: ChangeOp::Put,
        version: Version {
            hlc,
            replica: ReplicaId::parse("bench")?,
        },
        scope: "*".into(),
        item: Some(item),
        base: None,
    };
    let row = layout.row(
        &change,
        &format!("{hlc}-bench"),
        "bench",
        Settings::default().horizon_ms,
    )?;
    Ok(to_attrs(&row))
}
