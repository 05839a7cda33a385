//! Schema loading: valid documents and invalid ones with the exact place of the error.

use ferry_schema::{
    Durability, Enable, Error, FieldType, Generate, IndexKind, Projection, Schema, SyncDirection,
};

use crate::fixture;

/// A document with the primary index `pk`/`sk`, the given models and extra top-level text.
fn doc(models: &str, extra: &str) -> String {
    format!(
        "{{version: '1', indexes: {{primary: {{hash: 'pk', sort: 'sk'}}}}, models: {{{models}}}, {extra}}}"
    )
}

/// A model `User` with key fields and the given extra fields.
fn user(fields: &str) -> String {
    doc(
        &format!("User: {{pk: {{value: 'u#${{id}}'}}, sk: {{value: 'u'}}, id: {{}}, {fields}}}"),
        "",
    )
}

fn check_invalid(text: &str, at: &str) {
    match Schema::parse(text) {
        Err(Error::Schema { at: got, message }) => {
            assert_eq!(got, at, "{text}\nmessage: {message}");
            assert!(
                message.starts_with(|c: char| !c.is_uppercase()),
                "lowercase message: {message}"
            );
        }
        other => panic!("{text}\nexpected a schema error at {at}, got {other:?}"),
    }
}

#[test]
fn invalid_documents_name_the_place() {
    let lsi = |i: usize| format!("l{i}: {{type: 'local', sort: 's{i}'}}");
    let six_lsis = (0..6).map(lsi).collect::<Vec<_>>().join(", ");
    let cases: Vec<(String, &str)> = vec![
        (
            "{indexes: {primary: {hash: 'pk'}}, models: {}}".into(),
            "version",
        ),
        (doc("", "format: 'onetable:2.0.0'"), "format"),
        ("{version: '1', models: {}}".into(), "indexes"),
        (
            "{version: '1', indexes: {gs1: {hash: 'a'}}, models: {}}".into(),
            "indexes.primary",
        ),
        (
            "{version: '1', indexes: {primary: {sort: 'sk'}}, models: {}}".into(),
            "indexes.primary.hash",
        ),
        (doc("", "foo: 1"), "foo"),
        (doc("", "params: {foo: 1}"), "params.foo"),
        (
            doc("", "params: {timestamps: 'sometimes'}"),
            "params.timestamps",
        ),
        (doc("", "params: {nulls: 'yes'}"), "params.nulls"),
        (doc("'1User': {}", ""), "models.1User"),
        (user("email: {foo: 1}"), "models.User.fields.email.foo"),
        (
            user("email: {type: 'text'}"),
            "models.User.fields.email.type",
        ),
        (
            user("email: {validate: '/[a-/'}"),
            "models.User.fields.email.validate",
        ),
        (
            user("email: {validate: '/a/q'}"),
            "models.User.fields.email.validate",
        ),
        (
            user("a: {value: '${b}'}, b: {value: 'x${a}'}"),
            "models.User.fields.a.value",
        ),
        (user("a: {value: '${b'}"), "models.User.fields.a.value"),
        (
            doc("User: {pk: {type: 'boolean'}, sk: {}}", ""),
            "models.User.fields.pk.type",
        ),
        (doc("User: {pk: {}}", ""), "models.User.fields"),
        (
            doc("User: {pk: {}, sk: {}, a: {map: 'sk.x'}}", ""),
            "models.User.fields.a.map",
        ),
        (
            doc(
                "",
                "indexes: {primary: {hash: 'pk', sort: 'sk'}, l1: {type: 'local'}}",
            ),
            "indexes.l1.sort",
        ),
        (
            doc(
                "",
                "indexes: {primary: {hash: 'pk', sort: 'sk'}, l1: {type: 'local', hash: 'x', sort: 's'}}",
            ),
            "indexes.l1.hash",
        ),
        (
            doc(
                "",
                &format!("indexes: {{primary: {{hash: 'pk', sort: 'sk'}}, {six_lsis}}}"),
            ),
            "indexes",
        ),
        (
            doc(
                "",
                "indexes: {primary: {hash: 'pk'}, gs1: {hash: 'a', project: 'some'}}",
            ),
            "indexes.gs1.project",
        ),
        (
            doc(
                "",
                "indexes: {primary: {hash: 'pk'}, gs1: {hash: 'a', follow: true}}",
            ),
            "indexes.gs1.follow",
        ),
        (
            doc(
                "",
                "indexes: {primary: {hash: 'pk'}, gs1: {hash: 'a', type: 'tree'}}",
            ),
            "indexes.gs1.type",
        ),
        (
            user("").replace("models:", "control: {Ghost: {}}, models:"),
            "control.Ghost",
        ),
        (
            user("").replace("models:", "process: {Ghost: {}}, models:"),
            "process.Ghost",
        ),
        (
            user("").replace(
                "models:",
                "control: {User: {enable: 'device', sync: 'up'}}, models:",
            ),
            "control.User.sync",
        ),
        (
            user("").replace("models:", "control: {User: {foo: 1}}, models:"),
            "control.User.foo",
        ),
        (
            user("").replace(
                "models:",
                "control: {User: {durability: 'eventually'}}, models:",
            ),
            "control.User.durability",
        ),
        (
            user("").replace("models:", "control: {}, process: {}, models:"),
            "process",
        ),
        (
            user("code: {generate: 'snowflake'}"),
            "models.User.fields.code.generate",
        ),
        (
            user("code: {type: 'number', generate: 'ulid'}"),
            "models.User.fields.code.generate",
        ),
        (
            user("code: {generate: 'uid(0)'}"),
            "models.User.fields.code.generate",
        ),
        (user("code: {uuid: 'uid'}"), "models.User.fields.code.uuid"),
        (
            user("code: {generate: 'ulid', uuid: 'ulid'}"),
            "models.User.fields.code.uuid",
        ),
        (
            user("a: {type: 'object', schema: {zip: {foo: 1}}}"),
            "models.User.fields.a.schema.zip.foo",
        ),
        (
            user("a: {type: 'object', schema: {zip: {unique: true}}}"),
            "models.User.fields.a.schema.zip.unique",
        ),
        (
            user("a: {type: 'object', schema: {zip: {map: 'x.y'}}}"),
            "models.User.fields.a.schema.zip.map",
        ),
        (
            user("a: {schema: {zip: {}}}"),
            "models.User.fields.a.schema",
        ),
        (
            user("a: {type: 'object', items: {}}"),
            "models.User.fields.a.items",
        ),
        (
            user("a: {type: 'array', items: {type: 'object', schema: {b: {type: 'nope'}}}}"),
            "models.User.fields.a.items.schema.b.type",
        ),
        (
            user("n: {type: 'number', enum: ['a']}"),
            "models.User.fields.n.enum",
        ),
        (
            user("n: {type: 'number', default: 'many'}"),
            "models.User.fields.n.default",
        ),
        (
            user("t: {type: 'string', ttl: true}"),
            "models.User.fields.t.ttl",
        ),
        (user("e: {scope: '${id}'}"), "models.User.fields.e.scope"),
        (
            user("a: {map: 'x'}, b: {map: 'x'}"),
            "models.User.fields.b.map",
        ),
        (
            user("a: {map: 'x.y'}, b: {map: 'x.y'}"),
            "models.User.fields.b.map",
        ),
        (user("a: {map: 'x.y.z'}"), "models.User.fields.a.map"),
        (user("p: {sync: 'up'}"), "models.User.fields.p.sync"),
        (
            user("p: {encode: ['nope', '#', 1]}"),
            "models.User.fields.p.encode",
        ),
        (user("p: {encode: 'pk'}"), "models.User.fields.p.encode"),
        (
            user("p: {required: 'yes'}"),
            "models.User.fields.p.required",
        ),
        (
            user("").replace("models:", "blend: ['more.json5'], models:"),
            "blend",
        ),
        (
            "{version: '1', indexes: {primary: {hash: 'pk'}}, models: {".into(),
            "schema",
        ),
    ];
    for (text, at) in cases {
        check_invalid(&text, at);
    }
}

fn check_valid(text: &str, check: impl Fn(&Schema)) {
    let schema = Schema::parse(text).unwrap_or_else(|e| panic!("{text}\n{e}"));
    check(&schema);
    // The stored document reloads to the same schema.
    let again = Schema::from_value(schema.document().clone()).unwrap();
    assert_eq!(again.indexes(), schema.indexes());
}

#[test]
fn valid_fixture() {
    check_valid(fixture::SCHEMA, |schema| {
        let names: Vec<&str> = schema.models().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["Order", "Thing", "User"]);
        assert_eq!(schema.params().type_field, "_type");
        assert!(schema.params().timestamps.created && schema.params().timestamps.updated);
        let gs1 = schema.index("gs1").unwrap();
        assert_eq!(
            (gs1.kind, &gs1.project),
            (IndexKind::Global, &Projection::Keys)
        );
        let order = schema.model("Order").unwrap();
        assert_eq!(order.control.sync, SyncDirection::Up);
        assert!(
            order.field("gs1pk").unwrap().required,
            "index key fields are required"
        );
        let user = schema.model("User").unwrap();
        assert_eq!(user.control.sync, SyncDirection::None);
        let field = |name: &str| user.field(name).unwrap();
        assert!(
            field("pk").hidden && field("pk").required,
            "template key fields are hidden and required"
        );
        assert!(field("_type").hidden, "the type field is added and hidden");
        assert_eq!(
            field("created").ty,
            FieldType::Date,
            "timestamps are added as dates"
        );
        assert_eq!(field("id").generate, Some(Generate::Ulid));
        assert_eq!(
            (field("nick").attr.as_str(), field("score").attr.as_str()),
            ("data", "s")
        );
        assert!(field("password").sync_none && field("password").crypt);
        assert_eq!(field("pk").template(), Some("user#${id}"));
        let order: Vec<&str> = user
            .fields
            .iter()
            .take(4)
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(
            order,
            ["pk", "sk", "id", "name"],
            "fields keep schema order"
        );
    });
}

#[test]
fn valid_indexes() {
    let indexes = "indexes: {primary: {hash: 'pk', sort: 'sk'}, ls1: {type: 'local', sort: 'x'}, \
                   gs2: {hash: 'g', project: ['a', 'pk', 'g', 'b']}, gs1: {hash: 'h'}}";
    check_valid(&doc("", indexes), |schema| {
        let names: Vec<&str> = schema.indexes().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["primary", "gs1", "gs2", "ls1"]);
        let ls1 = schema.index("ls1").unwrap();
        assert_eq!((ls1.kind, ls1.hash.as_str()), (IndexKind::Local, "pk"));
        let attrs = Projection::Attrs(vec!["a".into(), "b".into()]);
        assert_eq!(
            schema.index("gs2").unwrap().project,
            attrs,
            "keys are left out of attrs"
        );
    });
}

#[test]
fn valid_params_control_and_accepted_properties() {
    let accepted = "description: 'd', queries: {}, items: {}, extensions: {x: 1}, \
                    params: {typeField: 'kind', timestamps: 'update', isoDates: true, nulls: true, separator: ':', warn: false, hidden: false, legacyEmpties: false}, \
                    process: {User: {enable: 'device', scope: '${deviceId}', durability: 'immediate', mem: true, delay: 1, show: true, notify: 'x', actions: {}, metrics: []}}";
    let fields = "User: {pk: {value: 'u#${id}'}, sk: {}, id: {uuid: 'uuid'}, b: {type: 'buffer'}, c: {type: 'arraybuffer'}, \
                  d: {filter: false, fixed: true, reference: 'x', timestamp: true, drop: false, nulls: false, isoDates: false}, \
                  e: {generate: 'uid(8)'}, f: {generate: 'uid'}, g: {type: 'array', items: {type: 'number'}}}";
    check_valid(&doc(fields, accepted), |schema| {
        let params = schema.params();
        assert_eq!(
            (params.type_field.as_str(), params.separator.as_str()),
            ("kind", ":")
        );
        assert!(
            params.iso_dates
                && params.nulls
                && !params.timestamps.created
                && params.timestamps.updated
        );
        let user = schema.model("User").unwrap();
        assert_eq!(user.control.enable, Enable::Device);
        assert_eq!(user.control.durability, Some(Durability::Immediate));
        assert_eq!(user.control.scope.as_deref(), Some("${deviceId}"));
        assert!(user.control.mem);
        assert_eq!(user.field("id").unwrap().generate, Some(Generate::Uuid));
        assert_eq!(user.field("b").unwrap().ty, FieldType::Binary);
        assert_eq!(user.field("e").unwrap().generate, Some(Generate::Uid(8)));
        assert_eq!(user.field("f").unwrap().generate, Some(Generate::Uid(10)));
        assert!(user.field("kind").unwrap().hidden);
        assert!(user.field("created").is_none() && user.field("updated").is_some());
        assert!(
            !user.field("d").unwrap().nulls,
            "a field overrides the params"
        );
    });
}

#[test]
fn lookups_name_what_exists() {
    let schema = fixture::schema();
    let Err(Error::Argument(message)) = schema.model("Nope") else {
        panic!("unknown model")
    };
    assert_eq!(
        message,
        "unknown model 'Nope' (the schema has: Order, Thing, User)"
    );
    let Err(Error::Argument(message)) = schema.index("gs9") else {
        panic!("unknown index")
    };
    assert_eq!(
        message,
        "unknown index 'gs9' (the schema has: primary, gs1)"
    );
    assert_eq!(Error::Argument(String::new()).code(), "ArgumentError");
    let Err(cycle) = Schema::parse(&user(
        "a: {value: '${b}'}, b: {value: '${c}#'}, c: {value: '${a}'}",
    )) else {
        panic!("a template cycle")
    };
    assert_eq!(cycle.code(), "SchemaError");
    assert_eq!(
        cycle.to_string(),
        "schema error at models.User.fields.a.value: templates depend on each other in a cycle (a -> b -> c -> a): break the cycle"
    );
}

#[test]
fn blend_merges_parts_deeply() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "main.json5",
        "{version: '1', blend: ['parts/models.json5', 'params.json5'], indexes: {primary: {hash: 'pk'}}, \
         params: {typeField: 'kind', separator: ':'}, description: ['a', 'b'], models: {}}",
    );
    std::fs::create_dir(dir.path().join("parts")).unwrap();
    // A part's own blend is not followed: the missing file is never read.
    write(
        "parts/models.json5",
        "{blend: ['missing.json5'], models: {User: {pk: {value: 'u#${id}'}, id: {}}}}",
    );
    write(
        "params.json5",
        "{params: {nulls: true}, description: ['c'], models: {User: {name: {required: true}}}}",
    );
    let schema = Schema::from_path(&dir.path().join("main.json5")).unwrap();
    let params = schema.params();
    assert_eq!(
        (
            params.type_field.as_str(),
            params.separator.as_str(),
            params.nulls
        ),
        ("kind", ":", true)
    );
    let user = schema.model("User").unwrap();
    assert!(
        user.field("pk").is_some() && user.field("name").unwrap().required,
        "models merge key by key"
    );
    assert_eq!(
        schema.document()["description"],
        serde_json::json!(["c"]),
        "arrays replace"
    );
    assert!(schema.document().get("blend").is_none());
    Schema::from_value(schema.document().clone()).unwrap();

    write(
        "bad.json5",
        "{version: '1', blend: ['nope.json5'], indexes: {primary: {hash: 'pk'}}, models: {}}",
    );
    let Err(Error::Schema { at, .. }) = Schema::from_path(&dir.path().join("bad.json5")) else {
        panic!("a missing part is an error")
    };
    assert!(at.ends_with("nope.json5"), "{at}");
}
