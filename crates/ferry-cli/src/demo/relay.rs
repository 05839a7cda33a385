//! The demo's relay: Ferry's relay over its embedded store, on a loopback port of this
//! process, with a fresh signing secret; devices connect to it over WebSocket with tokens,
//! as they would to a relay anywhere.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use ferry::journal::Change;
use ferry::replication::{Models, PushOutcome, Role};
use ferry::types::Key;
use ferry::ws::WsTransport;
use ferry::{Db, Transport};
use ferry_relay::{EmbeddedStore, RelayConfig, Secret};

/// Tombstones stay a month, as in a default deployment.
const HORIZON_MS: u64 = 30 * 24 * 3600 * 1000;
/// The demo's tokens outlive the demo.
const TOKEN_TTL_S: u64 = 24 * 3600;

/// The relay, running.
pub struct RelaySide {
    rt: tokio::runtime::Runtime,
    store: Arc<EmbeddedStore>,
    secret: Secret,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl RelaySide {
    /// Starts a relay over an embedded store in `dir`, for `schema`'s models.
    pub fn start(dir: &Path, schema: &ferry::Schema) -> Result<RelaySide> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let models = Models::new(schema.cloud_directions(), schema.item_layout());
        let store = EmbeddedStore::open(dir, HORIZON_MS, models)
            .with_context(|| format!("opening the relay's store in {}", dir.display()))?;
        let store = Arc::new(store);
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let secret = Secret::new(bytes)?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("ws://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = RelayConfig::new(secret.clone());
        let shutdown = async {
            let _ = stopped.await;
        };
        let served = rt.spawn(ferry_relay::serve(
            listener,
            store.clone(),
            config,
            shutdown,
        ));
        Ok(RelaySide {
            rt,
            store,
            secret,
            url,
            stop: Some(stop),
            served: Some(served),
        })
    }

    /// What the story says it syncs through.
    pub fn describe(&self) -> String {
        format!("Ferry's relay at {} (embedded store)", self.url)
    }

    /// A transport for `db`, with a token for its device.
    pub fn transport(&self, db: &Db) -> Result<WsTransport> {
        let device = (db.context().get("deviceId"))
            .and_then(|id| id.as_str())
            .context("a demo device has a deviceId")?;
        let token = self.secret.sign(device, Default::default(), TOKEN_TTL_S)?;
        Ok(WsTransport::new(&self.url, &token, &db.status().replica)?)
    }

    /// A cloud service's write, through the relay with a service token for its scope, so
    /// that the relay sends it to connected devices at once.
    pub fn write(&self, change: Change) -> Result<()> {
        let scopes = [change.scope.clone()].into();
        let token = (self.secret).sign_as(Role::Service, "demo-cloud", scopes, TOKEN_TTL_S)?;
        let service = WsTransport::new(&self.url, &token, "demo-cloud")?;
        let results = self.rt.block_on(async {
            service.connect().await?;
            service.push(vec![change]).await
        })?;
        match results.first() {
            Some((_, _, PushOutcome::Applied)) => Ok(()),
            other => bail!("the relay refused the write: {other:?}"),
        }
    }

    /// The latest change of `key` in the relay's store.
    pub fn get(&self, key: &Key) -> Result<Option<Change>> {
        Ok(self.store.get(key)?)
    }
}

impl Drop for RelaySide {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), served).await });
        }
    }
}
