//! The catalogue file shipped in the repository (`catalogue.json`), which seeds
//! the workflows table.

use serde::Deserialize;
use serde_json::Value;

/// One workflow as the catalogue file describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct Entry {
    pub id: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub fal_endpoint: String,
    pub parameters_schema: Value,
    #[serde(default = "active")]
    pub active: bool,
}

fn active() -> bool {
    true
}

#[derive(Deserialize)]
struct File {
    workflows: Vec<Entry>,
}

/// The catalogue compiled into the binary.
pub fn builtin() -> anyhow::Result<Vec<Entry>> {
    parse(include_str!("../catalogue.json"))
}

pub fn parse(text: &str) -> anyhow::Result<Vec<Entry>> {
    let file: File = serde_json::from_str(text)?;
    Ok(file.workflows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema;

    #[test]
    fn the_builtin_catalogue_is_sound() {
        let entries = builtin().expect("parses");
        assert!(entries.len() >= 9);
        let mut ids = std::collections::HashSet::new();
        for entry in &entries {
            assert!(ids.insert(entry.id.clone()), "{} twice", entry.id);
            let validator = schema::compile(&entry.parameters_schema)
                .unwrap_or_else(|err| panic!("{}: {err}", entry.id));
            let defaults = schema::defaults_of(&entry.parameters_schema);
            // With only what a user must give, the defaults make a valid set.
            let mut required = serde_json::Map::new();
            for name in entry.parameters_schema["required"]
                .as_array()
                .into_iter()
                .flatten()
            {
                required.insert(name.as_str().expect("name").to_owned(), "a prompt".into());
            }
            schema::validate(&validator, &defaults, required)
                .unwrap_or_else(|violations| panic!("{}: {violations:?}", entry.id));
            assert_eq!(
                entry.parameters_schema["additionalProperties"], false,
                "{}",
                entry.id
            );
        }
        for endpoint in [
            "fal-ai/clarity-upscaler",
            "fal-ai/esrgan",
            "fal-ai/aura-sr",
            "fal-ai/birefnet",
            "fal-ai/imageutils/rembg",
            "fal-ai/flux/dev/image-to-image",
        ] {
            assert!(
                entries.iter().any(|entry| entry.fal_endpoint == endpoint),
                "{endpoint}"
            );
        }
    }
}
