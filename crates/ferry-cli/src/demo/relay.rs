//! The demo's relay: Ferry's relay over its embedded store, on a loopback port of this
//! process, with a fresh signing secret; devices connect to it over WebSocket with tokens,
//! as they would to a relay anywhere, and the demo's cloud service writes through it in
//! cloud mode with a service token (`ferry::service`), as `ferry cloud ... --relay` does.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use ferry::replication::{Models, Role};
use ferry::service::{Service, TransportRows};
use ferry::ws::WsTransport;
use ferry::{Db, UpdateOps};
use ferry_relay::{EmbeddedStore, RelayConfig, Secret};
use serde_json::Value as Json;

/// Tombstones stay a month, as in a default deployment.
const HORIZON_MS: u64 = 30 * 24 * 3600 * 1000;
/// The demo's cloud service: its name and replica id.
const SERVICE: &str = "demo-cloud";
/// The demo's tokens outlive the demo.
const TOKEN_TTL_S: u64 = 24 * 3600;

/// The relay, running, and the demo's cloud service connected to it.
pub struct RelaySide {
    rt: tokio::runtime::Runtime,
    secret: Secret,
    url: String,
    service: Service<TransportRows<WsTransport>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl RelaySide {
    /// Starts a relay over an embedded store in `dir`, for `schema`'s models, and connects
    /// the demo's cloud service to it.
    pub fn start(dir: &Path, schema: &ferry::Schema, devices: &[&str]) -> Result<RelaySide> {
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
        let served = rt.spawn(ferry_relay::serve(listener, store, config, shutdown));
        let scopes = (devices.iter().map(|d| d.to_string()))
            .chain(["*".to_string()])
            .collect();
        let token = secret.sign_as(Role::Service, SERVICE, scopes, TOKEN_TTL_S)?;
        let link = WsTransport::new(&url, &token, SERVICE)?;
        let connect = Service::connect(link, Arc::new(schema.clone()), SERVICE, None);
        let service = rt.block_on(connect)?;
        Ok(RelaySide {
            rt,
            secret,
            url,
            service,
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

    /// A cloud service's write of a `model` item (created or updated), in cloud mode
    /// through the relay: the relay sends it to connected devices at once.
    pub fn put(&self, model: &str, props: &Json) -> Result<()> {
        let ops = UpdateOps::default();
        self.rt
            .block_on(self.service.update(model, props, &ops, true))?;
        Ok(())
    }

    /// The cloud's item of `model` at the key `props` give, read through the relay.
    pub fn get(&self, model: &str, props: &Json) -> Result<Option<Json>> {
        Ok(self.rt.block_on(self.service.get(model, props, false))?)
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
