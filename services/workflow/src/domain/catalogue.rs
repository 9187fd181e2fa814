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
    /// How the outputs follow from the input and parameters (for estimates).
    pub output: super::estimate::OutputSpec,
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
    parse(include_str!("../../catalogue.json"))
}

pub fn parse(text: &str) -> anyhow::Result<Vec<Entry>> {
    let file: File = serde_json::from_str(text)?;
    Ok(file.workflows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schema;

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

    /// Parameter help: every parameter of every workflow has a short title and
    /// a description a person can act on, and the output description names
    /// only parameters the workflow has, of the right kind.
    #[test]
    fn every_parameter_has_a_title_and_a_description_and_outputs_are_described() {
        for entry in builtin().expect("parses") {
            let properties = entry.parameters_schema["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{}: no properties", entry.id));
            for (name, property) in properties {
                let title = property["title"].as_str().unwrap_or_default();
                assert!(
                    !title.trim().is_empty() && title.len() <= 40,
                    "{}.{name}: a title of at most 40 characters",
                    entry.id
                );
                let description = property["description"].as_str().unwrap_or_default();
                assert!(
                    description.len() >= 20 && description.len() <= 200,
                    "{}.{name}: a description of 20 to 200 characters, not {description:?}",
                    entry.id
                );
                assert!(
                    description.ends_with('.'),
                    "{}.{name}: the description is a sentence",
                    entry.id
                );
                assert_ne!(
                    description.to_lowercase(),
                    title.to_lowercase(),
                    "{}.{name}: the description says more than the title",
                    entry.id
                );
            }
            let output = &entry.output;
            for (parameter, kinds) in [
                (&output.scale_parameter, &["number", "integer"][..]),
                (&output.count_parameter, &["integer"][..]),
                (&output.mask_parameter, &["boolean"][..]),
                (&output.format_parameter, &["string"][..]),
            ] {
                if let Some(name) = parameter {
                    let kind = properties.get(name).unwrap_or_else(|| {
                        panic!("{}: output names {name}, not a parameter", entry.id)
                    })["type"]
                        .as_str()
                        .unwrap_or_default();
                    assert!(kinds.contains(&kind), "{}.{name} is a {kind}", entry.id);
                }
            }
            assert!(
                ["png", "jpeg", "webp", "gif"].contains(&output.format.as_str()),
                "{}: format {}",
                entry.id,
                output.format
            );
            assert!(output.scale > 0.0, "{}", entry.id);
        }
    }
}
