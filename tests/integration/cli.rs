//! The real `ferry` binary: its surface, output shapes, exit status and error lines.

use serde_json::{Value as Json, json};

use crate::support::{example_schema_path, ferry};

/// Runs ferry against a database in `dir` with the example schema and device d1.
fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let db = dir.to_str().unwrap();
    let schema = example_schema_path();
    let mut all = vec![
        "--db",
        db,
        "--schema",
        schema.to_str().unwrap(),
        "--device",
        "d1",
    ];
    all.extend_from_slice(args);
    ferry(&all)
}

fn json_line(text: &str) -> Json {
    assert_eq!(text.lines().count(), 1, "one line of JSON: {text:?}");
    serde_json::from_str(text).unwrap()
}

#[test]
fn schema_check_summarizes_and_rejects_with_a_named_place() {
    let (code, out, _) = ferry(&["schema", "check", example_schema_path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("model User") && out.contains("index gs1"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"version": "1", "indexes": {"primary": {"hash": "pk"}}, "models": {"User": {"pk": {"type": "string"}, "name": {"type": "strin"}}}}"#).unwrap();
    let (code, _, err) = ferry(&["schema", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("SchemaError: ")
            && err.contains("User")
            && err.contains("name")
            && err.contains("type"),
        "{err}"
    );
}

#[test]
fn create_get_update_find_remove_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(
        dir.path(),
        &[
            "create",
            "User",
            r#"{"name": "Ada", "email": "ada@example.com", "password": "pw"}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let ada = json_line(&out);
    assert!(
        ada.get("password").is_none(),
        "hidden field printed without --hidden: {ada}"
    );
    let id = ada["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 26, "a ULID");

    let key = json!({"id": id}).to_string();
    let (code, out, _) = run(dir.path(), &["get", "User", &key, "--hidden"]);
    assert_eq!(code, 0);
    assert_eq!(json_line(&out)["password"], "pw");

    let (code, out, err) = run(
        dir.path(),
        &[
            "update",
            "User",
            &json!({"id": id, "role": "admin"}).to_string(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["role"], "admin");

    let (code, out, _) = run(
        dir.path(),
        &["find", "User", r#"{"role": "admin"}"#, "--index", "gs1"],
    );
    assert_eq!(code, 0);
    let page = json_line(&out);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], Json::Null);

    let (code, out, _) = run(dir.path(), &["remove", "User", &key]);
    assert_eq!((code, json_line(&out)), (0, json!({"removed": 1})));
    let (code, _, err) = run(dir.path(), &["get", "User", &key]);
    assert_eq!(code, 1);
    assert!(err.starts_with("NotFoundError: "), "{err}");
}

#[test]
fn exit_status_and_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    let ada = r#"{"name": "Ada", "email": "ada@example.com"}"#;
    assert_eq!(run(dir.path(), &["create", "User", ada]).0, 0);
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &[
                "create",
                "User",
                r#"{"name": "Eve", "email": "ada@example.com"}"#,
            ],
            1,
            "UniqueError: ",
        ),
        (
            &["create", "User", r#"{"email": "eve@example.com"}"#],
            2,
            "ValidationError: ",
        ),
        (
            &[
                "create",
                "User",
                r#"{"name": "Eve", "email": "eve@example.com", "role": "root"}"#,
            ],
            2,
            "ValidationError: ",
        ),
        (
            &["create", "Config", r#"{"name": "rate"}"#],
            2,
            "ControlError: ",
        ),
        (
            &["create", "Status", r#"{"state": "ok"}"#],
            2,
            "ControlError: ",
        ),
        (&["create", "Nope", r#"{}"#], 2, "ArgumentError: "),
        (&["create", "User", "not json"], 2, "ArgumentError: "),
        (
            &[
                "update",
                "Fault",
                r#"{"id": "01J00000000000000000000000", "code": 1}"#,
            ],
            1,
            "NotFoundError: ",
        ),
        (
            &["find", "User", "{}", "--next", "zz"],
            2,
            "ArgumentError: ",
        ),
        (
            &[
                "find",
                "Reading",
                r#"{"sensor": "t"}"#,
                "--where",
                "${value} = ",
            ],
            2,
            "ExpressionError: ",
        ),
        (&["find", "User", "{}"], 2, "ArgumentError: "),
    ];
    for (args, want_code, want_prefix) in cases {
        let (code, _, err) = run(dir.path(), args);
        assert_eq!(code, *want_code, "{args:?}: {err}");
        assert!(err.starts_with(want_prefix), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
    let big =
        json!({"name": "Big", "email": "big@example.com", "password": "x".repeat(500 * 1024)})
            .to_string();
    let big_file = dir.path().join("big.json");
    std::fs::write(&big_file, big).unwrap();
    let (code, _, err) = run(
        dir.path(),
        &["create", "User", &format!("@{}", big_file.display())],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("ValidationError: "), "{err}");
    // Usage errors are invalid input too.
    assert_eq!(ferry(&["create"]).0, 2);
}

#[test]
fn pagination_load_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.json");
    let readings: Vec<Json> = (0..25)
        .map(|i| json!({"sensor": "t", "at": i, "value": i}))
        .collect();
    std::fs::write(&seed, json!({"Reading": readings}).to_string()).unwrap();
    let db = dir.path().join("db");
    let (code, out, err) = run(&db, &["load", seed.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out), json!({"loaded": 25}));

    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut args = vec!["find", "Reading", r#"{"sensor": "t"}"#, "--limit", "10"];
        if let Some(cursor) = &next {
            args.extend(["--next", cursor.as_str()]);
        }
        let (code, out, err) = run(&db, &args);
        assert_eq!(code, 0, "{err}");
        let page = json_line(&out);
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["at"].as_i64().unwrap()),
        );
        match page["next"].as_str() {
            Some(cursor) => next = Some(cursor.to_string()),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..25).collect::<Vec<_>>(),
        "every item once, in order, no repeated page"
    );

    let (code, out, _) = run(&db, &["export"]);
    assert_eq!(code, 0);
    assert_eq!(json_line(&out)["Reading"].as_array().unwrap().len(), 25);

    // The database remembers its schema: no --schema needed now.
    let (code, out, err) = ferry(&[
        "--db",
        db.to_str().unwrap(),
        "--device",
        "d1",
        "get",
        "Reading",
        r#"{"sensor": "t", "at": 3}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["value"], 3);
}

#[test]
fn relay_token_prints_a_signed_expiring_token_the_relay_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let random: Vec<u8> = (0..32u8).map(|n| n.wrapping_mul(37) ^ 0x5a).collect();
    crate::support::write_secret(&secret, &random);
    let secret_path = secret.to_str().unwrap();
    let (code, out, err) = ferry(&[
        "relay",
        "token",
        "--secret-file",
        secret_path,
        "--device",
        "pump-7",
        "--scope",
        "pump-7",
        "--scope",
        "*",
        "--ttl",
        "2h",
    ]);
    assert_eq!(code, 0, "{err}");
    let claims = ferry_relay::Secret::new(random.clone())
        .unwrap()
        .verify(out.trim())
        .unwrap();
    assert_eq!(claims.sub, "pump-7");
    assert_eq!(
        claims.granted(),
        ["pump-7".to_string(), "*".to_string()].into()
    );
    assert!(
        (7190..=7210).contains(&(claims.exp - claims.iat)),
        "{claims:?}"
    );
    let wrong = ferry_relay::Secret::new(vec![8u8; 32])
        .unwrap()
        .verify(out.trim());
    assert_eq!(wrong, Err(ferry_relay::TokenError::BadSignature));

    let token = |bytes: &[u8], mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&secret, bytes).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        ferry(&[
            "relay",
            "token",
            "--secret-file",
            secret_path,
            "--device",
            "x",
        ])
    };
    let (code, _, err) = token(b"short", 0o600);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("too short"), "{err}");
    let (code, _, err) = token(&random, 0o644);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("others than its owner may read it (mode 644): chmod 600"),
        "{err}"
    );
    let (code, _, err) = token(&[b'a'; 40], 0o600);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("only 1 distinct bytes"), "{err}");
}
