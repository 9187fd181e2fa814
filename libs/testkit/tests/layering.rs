//! Libraries never depend on services: no crate under `libs/` names a crate under
//! `services/` or the gateway among its dependencies of any kind (normal, dev or build).
//! A helper that needs a running service belongs with the services
//! (`services/testbed`).

use std::{path::Path, process::Command};

use serde_json::Value;

#[test]
fn no_library_depends_on_a_service() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root");
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata json");
    let libs = root.join("libs");
    let services = [root.join("services"), root.join("gateway")];
    let mut libraries = 0;
    let mut offences = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let manifest = Path::new(package["manifest_path"].as_str().expect("manifest path"));
        if !manifest.starts_with(&libs) {
            continue;
        }
        libraries += 1;
        for dependency in package["dependencies"].as_array().expect("dependencies") {
            let Some(path) = dependency["path"].as_str() else {
                continue;
            };
            if services
                .iter()
                .any(|service| Path::new(path).starts_with(service))
            {
                offences.push(format!(
                    "{} depends on {}",
                    package["name"].as_str().unwrap_or_default(),
                    dependency["name"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    assert!(libraries >= 8, "only {libraries} crates found under libs/");
    assert!(offences.is_empty(), "{offences:#?}");
}
