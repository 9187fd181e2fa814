//! Generates the gRPC code from `proto/` with protox, so no `protoc` is needed,
//! and the table of who may call each method (`access.rs`) from the contract's
//! `atelier.access.v1.access` method options.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use prost_reflect::{DescriptorPool, Value};

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

/// `pub const METHODS: &[Method]`: every method of every service with its access
/// option; and `pub const ADMIN: &[&str]`, the paths of the methods for
/// administrators (a table of its own, so `Method` reads the same as before).
fn access_table(pool: &DescriptorPool) -> Result<(String, String), Box<dyn std::error::Error>> {
    let extension = pool
        .get_extension_by_name("atelier.access.v1.access")
        .ok_or("the contract has no atelier.access.v1.access option")?;
    let mut table = String::from("pub const METHODS: &[Method] = &[\n");
    let mut admin_table = String::from("pub const ADMIN: &[&str] = &[\n");
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            let (mut public, mut callers, mut user_token, mut admin, mut scope) =
                (false, Vec::new(), false, false, String::new());
            if options.has_extension(&extension)
                && let Value::Message(access) = options.get_extension(&extension).as_ref()
            {
                let field = |name: &str| access.get_field_by_name(name);
                public = field("public")
                    .and_then(|value| value.as_bool())
                    .unwrap_or(false);
                admin = field("admin")
                    .and_then(|value| value.as_bool())
                    .unwrap_or(false);
                user_token = field("user_token")
                    .and_then(|value| value.as_bool())
                    .unwrap_or(false);
                scope = field("scope")
                    .and_then(|value| value.as_str().map(str::to_owned))
                    .unwrap_or_default();
                if let Some(Value::List(names)) = field("internal_callers").as_deref() {
                    callers = names
                        .iter()
                        .filter_map(|name| name.as_str().map(str::to_owned))
                        .collect();
                }
            }
            if public && !callers.is_empty() {
                return Err(format!("{} is both public and internal", method.full_name()).into());
            }
            if admin && (public || !callers.is_empty()) {
                return Err(format!(
                    "{} is for administrators and also public or internal",
                    method.full_name()
                )
                .into());
            }
            if !scope.is_empty() && (public || admin) {
                return Err(format!(
                    "{} needs no scope: it is public or for administrators",
                    method.full_name()
                )
                .into());
            }
            writeln!(
                table,
                "    Method {{ path: \"/{}/{}\", public: {public}, internal_callers: &{callers:?}, user_token: {user_token}, scope: {scope:?} }},",
                service.full_name(),
                method.name(),
            )?;
            if admin {
                writeln!(
                    admin_table,
                    "    \"/{}/{}\",",
                    service.full_name(),
                    method.name()
                )?;
            }
        }
    }
    table.push_str("];\n");
    admin_table.push_str("];\n");
    Ok((table, admin_table))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut files = Vec::new();
    proto_files(&root.join("atelier"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed={}", root.display());

    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(&files)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let (table, admin_table) = access_table(&compiler.descriptor_pool())?;
    std::fs::write(out_dir.join("access.rs"), table)?;
    std::fs::write(out_dir.join("access_admin.rs"), admin_table)?;
    let descriptors = compiler.file_descriptor_set();
    std::fs::write(
        out_dir.join("atelier_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .bytes(".atelier.image.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
