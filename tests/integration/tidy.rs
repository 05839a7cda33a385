//! The crate dependency rules of the design, checked against `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value as Json;

/// Workspace crates each crate may depend on (normal dependencies). Crates not listed
/// (xtask, benchmarks, tests) may use anything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("ferry-types", &[]),
    ("ferry-schema", &["ferry-types"]),
    ("ferry-journal", &["ferry-types"]),
    // The seam and the write rule: below every engine, transport, store and relay.
    ("ferry-cloud", &["ferry-types", "ferry-journal"]),
    // Stores by a plain layout: no OneTable schema.
    ("ferry-store", &["ferry-types", "ferry-journal"]),
    (
        "ferry-sync",
        &["ferry-types", "ferry-journal", "ferry-cloud"],
    ),
    (
        "ferry-db",
        &[
            "ferry-types",
            "ferry-schema",
            "ferry-store",
            "ferry-journal",
            "ferry-sync",
        ],
    ),
    // Cloud mode: the schema's operations over any place rows live (a transport here).
    (
        "ferry-service",
        &[
            "ferry-types",
            "ferry-schema",
            "ferry-journal",
            "ferry-cloud",
        ],
    ),
    (
        "ferry-driver",
        &["ferry-db", "ferry-journal", "ferry-sync", "ferry-types"],
    ),
    // The facade composes the layers and re-exports their vocabulary.
    (
        "ferry",
        &[
            "ferry-db",
            "ferry-driver",
            "ferry-dynamo",
            "ferry-ws",
            "ferry-types",
            "ferry-schema",
            "ferry-store",
            "ferry-journal",
            "ferry-sync",
            "ferry-service",
        ],
    ),
    // DynamoDB: its rows are cloud mode's too (ferry-service's operations over them).
    (
        "ferry-dynamo",
        &[
            "ferry-types",
            "ferry-schema",
            "ferry-journal",
            "ferry-cloud",
            "ferry-service",
        ],
    ),
    // Wire types shared by the relay and its transport, defined once.
    (
        "ferry-protocol",
        &["ferry-types", "ferry-journal", "ferry-cloud"],
    ),
    // The device's side of the relay: a transport, nothing of the server.
    (
        "ferry-ws",
        &[
            "ferry-types",
            "ferry-journal",
            "ferry-cloud",
            "ferry-protocol",
        ],
    ),
    // The server stores the cloud's rows on ferry-store (embedded) or ferry-dynamo; it
    // knows nothing of the device side (the engine, the client transport).
    (
        "ferry-relay",
        &[
            "ferry-types",
            "ferry-store",
            "ferry-journal",
            "ferry-cloud",
            "ferry-protocol",
            "ferry-dynamo",
        ],
    ),
    ("ferry-cli", &["ferry", "ferry-relay"]),
];

/// Third-party crates only one workspace crate may name (and the benchmark that measures
/// the crate's own options against each other: `bench blocks` for fjall's).
const OWNED: &[(&str, &[&str])] = &[
    ("fjall", &["ferry-store", "ferry-bench"]),
    ("aws-sdk-dynamodb", &["ferry-dynamo"]),
];

/// Crates that must stay synchronous and deterministic.
const NO_TOKIO: &[&str] = &[
    "ferry-types",
    "ferry-cloud",
    "ferry-service",
    "ferry-schema",
    "ferry-store",
    "ferry-journal",
    "ferry-sync",
    "ferry-db",
    "ferry-protocol",
];

fn metadata(no_deps: bool) -> Json {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["metadata", "--format-version", "1"]);
    if no_deps {
        command.arg("--no-deps");
    }
    let out = command.output().expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Workspace package -> its normal (non-dev, non-build) dependency names.
fn normal_dependencies(meta: &Json) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        let deps = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str().map(String::from))
            .collect();
        out.insert(
            package["name"].as_str().unwrap_or_default().to_string(),
            deps,
        );
    }
    out
}

#[test]
fn workspace_edges_follow_the_layer_table() {
    let deps = normal_dependencies(&metadata(true));
    let workspace: BTreeSet<&String> = deps.keys().collect();
    for (krate, allowed) in ALLOWED {
        let Some(actual) = deps.get(*krate) else {
            continue;
        };
        for dep in actual.iter().filter(|d| workspace.contains(d)) {
            assert!(
                allowed.contains(&dep.as_str()),
                "{krate} may not depend on {dep} (ARCHITECTURE.md)"
            );
        }
    }
    for (dep, owners) in OWNED {
        for (krate, actual) in &deps {
            if actual.contains(*dep) {
                assert!(
                    owners.contains(&krate.as_str()),
                    "only {owners:?} may depend on {dep}, not {krate}"
                );
            }
        }
    }
    for krate in NO_TOKIO {
        if let Some(actual) = deps.get(*krate) {
            assert!(
                !actual.contains("tokio"),
                "{krate} must not depend on tokio"
            );
        }
    }
}

/// The crates of `crates/` in the order ARCHITECTURE.md lists them.
fn architecture_order() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).expect("ARCHITECTURE.md is readable");
    (text.lines())
        .filter_map(|line| line.strip_prefix("### `crates/"))
        .filter_map(|rest| rest.strip_suffix('`'))
        .map(String::from)
        .collect()
}

#[test]
fn every_crate_depends_only_on_crates_architecture_md_lists_above_it() {
    let order = architecture_order();
    let deps = normal_dependencies(&metadata(true));
    let workspace: BTreeSet<&String> = deps.keys().collect();
    for (krate, actual) in &deps {
        let Some(at) = order.iter().position(|name| name == krate) else {
            continue;
        };
        for dep in actual.iter().filter(|d| workspace.contains(d)) {
            let above = order[..at].contains(dep);
            assert!(
                above,
                "{krate} depends on {dep}, which ARCHITECTURE.md does not list above it"
            );
        }
    }
    let crates =
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates"))
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok());
    for krate in crates {
        assert!(
            order.contains(&krate),
            "ARCHITECTURE.md does not describe crates/{krate}"
        );
    }
}

/// The packages a build of `package` without default features compiles.
fn device_build(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            package,
            "--no-default-features",
            "-e",
            "normal",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        tree.lines().any(|l| l.starts_with("fjall ")),
        "the walk saw the store: {tree}"
    );
    tree
}

#[test]
fn a_device_only_build_has_no_tokio() {
    let tree = device_build("ferry");
    let async_runtime = tree.lines().find(|l| l.starts_with("tokio "));
    assert_eq!(
        async_runtime, None,
        "ferry without features must not pull in tokio"
    );
}

#[test]
fn the_device_only_cli_has_no_cloud_sdk_relay_or_tokio() {
    let tree = device_build("ferry-cli");
    for line in tree.lines() {
        let name = line.split(' ').next().unwrap_or_default();
        assert!(
            !name.starts_with("aws-")
                && !["ferry-dynamo", "ferry-relay", "ferry-ws", "tokio", "rustls"].contains(&name),
            "the device build of the ferry CLI pulls in {name}"
        );
    }
}
