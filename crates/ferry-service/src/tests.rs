use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};

use ferry_cloud::{
    Grant, Limits, MemoryCloud, MemoryTransport, PullFrom, PullPage, PushResults, Session,
    Transport, TransportError,
};
use ferry_journal::{Change, ChangeOp};
use ferry_schema::Schema;
use ferry_types::{Hlc, Item, Key, ReplicaId, Value, Version};
use serde_json::json;

use super::*;

const SCHEMA: &str = r#"{
    version: '1', format: 'onetable:1.1.0',
    indexes: { primary: { hash: 'pk', sort: 'sk' } },
    models: { Config: {
        pk: { type: 'string', value: 'config#' }, sk: { type: 'string', value: 'config#${name}' },
        name: { type: 'string', required: true }, value: { type: 'string' },
    } },
    control: { Config: { sync: 'down', scope: '*' } },
}"#;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::parse(SCHEMA).unwrap_or_else(|e| panic!("{e}")))
}

/// Polls a future that must be ready at once (the memory transport's are).
fn now<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut TaskContext::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("in-memory futures resolve at once"),
    }
}

fn cloud() -> Arc<Mutex<MemoryCloud>> {
    let mut cloud = MemoryCloud::default();
    cloud.set_time_ms(1_800_000_000_000);
    Arc::new(Mutex::new(cloud))
}

/// A transport whose first push lands but whose answer is lost.
struct LosesAnAnswer {
    inner: MemoryTransport,
    lost: AtomicBool,
}

impl Transport for LosesAnAnswer {
    async fn connect(&self) -> Result<Session, TransportError> {
        self.inner.connect().await
    }

    async fn push(&self, changes: Vec<Change>) -> Result<PushResults, TransportError> {
        let answer = self.inner.push(changes).await;
        match self.lost.swap(true, Ordering::SeqCst) {
            false => Err(TransportError::Unavailable("the answer was lost".into())),
            true => answer,
        }
    }

    async fn pull(
        &self,
        scope: &str,
        from: PullFrom,
        limit: usize,
    ) -> Result<PullPage, TransportError> {
        self.inner.pull(scope, from, limit).await
    }

    async fn get(&self, key: &Key) -> Result<Option<Change>, TransportError> {
        self.inner.get(key).await
    }
}

#[test]
fn a_write_whose_answer_was_lost_is_read_back_and_done() {
    let cloud = cloud();
    let service = Grant::service("ops", None);
    let inner = MemoryTransport::new(cloud.clone()).with_grant(service);
    let transport = LosesAnAnswer {
        inner,
        lost: AtomicBool::new(false),
    };
    let service = now(Service::connect(transport, schema(), "ops", None)).unwrap();
    let created = now(service.create("Config", &json!({"name": "rate", "value": "10"})));
    assert_eq!(created.map(|c| c["value"].clone()).ok(), Some(json!("10")));
    let got = now(service.get("Config", &json!({"name": "rate"}), false)).unwrap();
    assert_eq!(got.map(|c| c["value"].clone()), Some(json!("10")));
}

/// A cloud that answers snapshots from a script of pages.
struct Scripted {
    pages: Mutex<Vec<PullPage>>,
}

impl Transport for Scripted {
    async fn connect(&self) -> Result<Session, TransportError> {
        Ok(Session {
            server_time_ms: 1_800_000_000_000,
            scopes: None,
            limits: Limits::default(),
            horizon_ms: 1_000,
        })
    }

    async fn push(&self, _: Vec<Change>) -> Result<PushResults, TransportError> {
        Err(TransportError::Rejected("read only".into()))
    }

    async fn pull(&self, _: &str, _: PullFrom, _: usize) -> Result<PullPage, TransportError> {
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        match pages.len() {
            0 => Ok(PullPage::default()),
            1 => Ok(pages[0].clone()),
            _ => Ok(pages.remove(0)),
        }
    }
}

fn config(name: &str, value: Option<&str>, ms: u64) -> Change {
    let key = Key {
        hash: Value::S("config#".into()),
        sort: Some(Value::S(format!("config#{name}"))),
    };
    let item = value.map(|value| {
        Item::from([
            ("pk".to_string(), key.hash.clone()),
            ("sk".to_string(), key.sort.clone().unwrap_or(Value::Null)),
            ("_type".to_string(), Value::S("Config".into())),
            ("name".to_string(), Value::S(name.into())),
            ("value".to_string(), Value::S(value.into())),
        ])
    });
    Change {
        model: "Config".into(),
        key,
        op: match item {
            Some(_) => ChangeOp::Put,
            None => ChangeOp::Delete,
        },
        version: Version {
            hlc: Hlc::new(ms, 0),
            replica: ReplicaId::parse("ops").unwrap_or_else(|e| panic!("{e}")),
        },
        scope: "*".into(),
        item,
        base: None,
    }
}

fn page(changes: Vec<(u64, Change)>, more: bool) -> PullPage {
    PullPage {
        changes: (changes.into_iter())
            .map(|(seq, change)| (Hlc::new(seq, 0), change))
            .collect(),
        more,
        safe: Hlc::ZERO,
    }
}

#[test]
fn find_keeps_each_keys_latest_change_across_pages() {
    // A row rewritten during the read shows up again later; one deleted meanwhile is gone.
    let pages = vec![
        page(
            vec![
                (1, config("a", Some("old"), 1)),
                (2, config("b", Some("x"), 2)),
            ],
            true,
        ),
        page(
            vec![(3, config("a", Some("new"), 3)), (4, config("b", None, 4))],
            false,
        ),
    ];
    let transport = Scripted {
        pages: Mutex::new(pages),
    };
    let service = now(Service::connect(transport, schema(), "ops", None)).unwrap();
    let found = now(service.find("Config", &json!({}), &CloudFind::default())).unwrap();
    assert_eq!(found.items.len(), 1, "{:?}", found.items);
    assert_eq!(found.items[0]["value"], json!("new"));
}

#[test]
fn a_snapshot_that_does_not_move_forward_fails_the_find() {
    let stuck = page(vec![(5, config("a", Some("x"), 5))], true);
    let transport = Scripted {
        pages: Mutex::new(vec![stuck]),
    };
    let service = now(Service::connect(transport, schema(), "ops", None)).unwrap();
    let found = now(service.find("Config", &json!({}), &CloudFind::default()));
    assert!(matches!(found, Err(Error::Transport(_))), "{found:?}");
}
