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

/// `pub const METHODS: &[Method]`: every method of every service with its access option.
fn access_table(pool: &DescriptorPool) -> Result<String, Box<dyn std::error::Error>> {
    let extension = pool
        .get_extension_by_name("atelier.access.v1.access")
        .ok_or("the contract has no atelier.access.v1.access option")?;
    let mut table = String::from("pub const METHODS: &[Method] = &[\n");
    for service in pool.services() {
        for method in service.methods() {
            let options = method.options();
            let (mut public, mut callers, mut user_token, mut admin) = (false, Vec::new(), false, false);
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
            writeln!(
                table,
                "    Method {{ path: \"/{}/{}\", public: {public}, internal_callers: &{callers:?}, user_token: {user_token}, admin: {admin} }},",
                service.full_name(),
                method.name(),
            )?;
        }
    }
    table.push_str("];\n");
    Ok(table)
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
    std::fs::write(
        out_dir.join("access.rs"),
        access_table(&compiler.descriptor_pool())?,
    )?;
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
