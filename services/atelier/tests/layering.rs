//! The shape every service keeps, checked over the source tree: `api.rs` (gRPC
//! glue) → `domain` (the rules) → `store.rs` (the tables), other services reached
//! only through `peers.rs`; the domain names no gRPC, protobuf or database type;
//! and libraries never depend on a service or the gateway.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

/// What a domain module may not name: the transport and the database.
const NOT_IN_DOMAIN: [&str; 5] = [
    "tonic",
    "tonic_types",
    "atelier_proto",
    "sea_orm",
    "sea_orm_migration",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The `.rs` files under `path` (or `path` itself), sorted.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).into_iter().flatten() {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The services: crates under `services/` that own a schema (the binary and the
/// test harness beside them own none).
fn services() -> Vec<PathBuf> {
    subdirs(&root().join("services"))
        .into_iter()
        .filter(|dir| dir.join("src/migration.rs").is_file())
        .collect()
}

/// Rust source without its comments and the contents of its string literals, so
/// that only code is searched.
fn code_only(source: &str) -> String {
    let mut code = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                code.push(' ');
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        '"' if !escaped => break,
                        '\\' => escaped = !escaped,
                        _ => escaped = false,
                    }
                }
                code.push_str("\"\"");
            }
            // A char literal, not a lifetime: skip what could be a quote or slash.
            '\'' if chars.clone().nth(1) == Some('\'') => {
                chars.nth(1);
                code.push_str("' '");
            }
            '\'' if chars.peek() == Some(&'\\') => {
                // The backslash and the escaped character, then up to the quote.
                chars.nth(1);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                }
                code.push_str("' '");
            }
            other => code.push(other),
        }
    }
    code
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `code` names crate `name` as a path (`name::…`) or imports it
/// (`use name`, `extern crate name`).
fn names_crate(code: &str, name: &str) -> bool {
    code.match_indices(name).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + name.len()..].trim_start();
        let preceded = code[..at].trim_end();
        before.is_none_or(|c| !is_ident(c))
            && after.chars().next().is_none_or(|c| !is_ident(c))
            && (after.starts_with("::")
                || preceded.ends_with("use")
                || preceded.ends_with("extern crate"))
    })
}

/// The crates a `Cargo.toml` depends on, in any dependency table (normal, dev,
/// build, per target), by their key.
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut in_table = false;
    for line in manifest.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_end_matches(']').trim_matches(['[', ']']);
            let (table, key) = match header.rsplit_once("dependencies") {
                Some((_, rest)) => (true, rest.trim_start_matches('.')),
                None => (false, ""),
            };
            in_table = table && key.is_empty();
            if table && !key.is_empty() {
                found.insert(key.trim_matches('"').to_owned());
            }
            continue;
        }
        if in_table
            && let Some((key, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            let key = key.trim().trim_matches('"');
            let key = key.strip_suffix(".workspace").unwrap_or(key);
            found.insert(key.trim().to_owned());
        }
    }
    found
}

/// The `name` of a manifest's `[package]`.
fn package_name(manifest: &str) -> String {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some(value) = line.strip_prefix("name")
            && let Some(value) = value.trim_start().strip_prefix('=')
        {
            return value.trim().trim_matches('"').to_owned();
        }
    }
    panic!("a manifest without a package name")
}

#[test]
fn every_service_is_api_domain_store_and_peers() {
    let services = services();
    assert!(services.len() >= 5, "services found: {services:?}");
    let mut wrong = Vec::new();
    for service in &services {
        let src = service.join("src");
        for file in ["api.rs", "store.rs"] {
            if !src.join(file).is_file() {
                wrong.push(format!("{} has no {file}", service.display()));
            }
        }
        if !src.join("domain.rs").is_file() && !src.join("domain/mod.rs").is_file() {
            wrong.push(format!("{} has no domain module", service.display()));
        }
        // Other services' clients live in peers.rs only.
        for file in rust_files(&src) {
            if file != src.join("peers.rs") && code_only(&read(&file)).contains("_client::") {
                wrong.push(format!(
                    "{} calls another service outside peers.rs",
                    file.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn domain_modules_name_no_grpc_protobuf_or_database_type() {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for service in services() {
        let src = service.join("src");
        for file in [src.join("domain.rs"), src.join("domain")]
            .iter()
            .filter(|path| path.exists())
            .flat_map(|path| rust_files(path))
        {
            checked += 1;
            let code = code_only(&read(&file));
            for name in NOT_IN_DOMAIN {
                if names_crate(&code, name) {
                    wrong.push(format!("{} names {name}", file.display()));
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} domain files found");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn libraries_depend_on_no_service_and_not_on_the_gateway() {
    let root = root();
    let forbidden: BTreeSet<String> = services()
        .iter()
        .map(|service| service.join("Cargo.toml"))
        .chain([
            root.join("services/atelier/Cargo.toml"),
            root.join("services/testbed/Cargo.toml"),
            root.join("gateway/Cargo.toml"),
        ])
        .map(|manifest| package_name(&read(&manifest)))
        .collect();
    assert!(forbidden.contains("atelier-gateway") && forbidden.contains("atelier-processing"));
    let mut wrong = Vec::new();
    for lib in subdirs(&root.join("libs")) {
        let manifest = lib.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let manifest = read(&manifest);
        let name = package_name(&manifest);
        let services: Vec<String> = dependencies(&manifest)
            .intersection(&forbidden)
            .cloned()
            .collect();
        if !services.is_empty() {
            wrong.push(format!("{name} depends on {}", services.join(", ")));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_checks_see_what_they_look_for() {
    let named = |source: &str, name: &str| names_crate(&code_only(source), name);
    assert!(named("use tonic::Status;", "tonic"));
    assert!(named("fn f() -> Result<(), tonic::Status> {}", "tonic"));
    assert!(named("use {sea_orm::DbErr, uuid::Uuid};", "sea_orm"));
    assert!(named("#[derive(sea_orm :: DeriveActiveEnum)]", "sea_orm"));
    assert!(named("extern crate atelier_proto;", "atelier_proto"));
    assert!(!named("// tonic::Status in a comment", "tonic"));
    assert!(!named("/* sea_orm::DbErr */ let x = 1;", "sea_orm"));
    assert!(!named(r#"let s = "tonic::Status";"#, "tonic"));
    assert!(!named("let my_tonic = 1; tonic_web::enable(x);", "tonic"));
    assert!(!named("let c = '\"'; let l: &'static str = x;", "tonic"));
    assert!(named("let c = '\"'; tonic::Code::Ok", "tonic"));
    assert!(named(
        r"let c = '\''; let d = '\u{7}'; sea_orm::Value",
        "sea_orm"
    ));

    let deps = dependencies(
        r#"
[package]
name = "atelier-lib"

[dependencies]
atelier-common.workspace = true
serde = { version = "1" }
# atelier-user.workspace = true

[dev-dependencies.atelier-gateway]
path = "../../gateway"

[target.'cfg(unix)'.build-dependencies]
"atelier-auth" = { path = "../../services/auth" }
"#,
    );
    assert_eq!(
        deps.into_iter().collect::<Vec<_>>(),
        ["atelier-auth", "atelier-common", "atelier-gateway", "serde"]
    );
    assert_eq!(
        package_name("[package]\nname = \"atelier-lib\"\n"),
        "atelier-lib"
    );
}
