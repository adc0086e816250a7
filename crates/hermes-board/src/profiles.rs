//! A worker profile's provider chain, read (never written) from its Hermes
//! `config.yaml`: `model.provider` first, then `fallback_providers`, then the
//! legacy `fallback_model` (a dict or a list).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// One link of a chain: a provider and the model to ask it for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    pub provider: String,
    pub model: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct HermesConfig {
    #[serde(default)]
    model: Option<serde_yaml::Value>,
    #[serde(default)]
    fallback_providers: Option<serde_yaml::Value>,
    #[serde(default)]
    fallback_model: Option<serde_yaml::Value>,
}

/// Parses the chain out of a Hermes config text. Unknown shapes are skipped,
/// never fatal: the chain is advice, not a requirement.
pub fn chain_from_yaml(text: &str) -> Result<Vec<ChainLink>, serde_yaml::Error> {
    let cfg: HermesConfig = serde_yaml::from_str(text)?;
    let mut chain = Vec::new();
    if let Some(model) = &cfg.model {
        if let Some(provider) = model.get("provider").and_then(|p| p.as_str()) {
            chain.push(ChainLink {
                provider: provider.to_string(),
                model: model
                    .get("default")
                    .and_then(|m| m.as_str())
                    .map(str::to_string),
            });
        }
    }
    for list in [&cfg.fallback_providers, &cfg.fallback_model]
        .into_iter()
        .flatten()
    {
        let items: Vec<&serde_yaml::Value> = match list {
            serde_yaml::Value::Sequence(s) => s.iter().collect(),
            other => vec![other],
        };
        for item in items {
            let Some(provider) = item.get("provider").and_then(|p| p.as_str()) else {
                continue;
            };
            let link = ChainLink {
                provider: provider.to_string(),
                model: item
                    .get("model")
                    .or_else(|| item.get("default"))
                    .and_then(|m| m.as_str())
                    .map(str::to_string),
            };
            if !chain.contains(&link) {
                chain.push(link);
            }
        }
    }
    Ok(chain)
}

/// Cached chains per profile, re-read when a config file changes.
#[derive(Default)]
pub struct Profiles {
    cache: HashMap<PathBuf, (Option<SystemTime>, Vec<ChainLink>)>,
    overrides: HashMap<String, Vec<ChainLink>>,
}

impl Profiles {
    /// `overrides` come from `providers.chains` in the watchdog config.
    pub fn new(overrides: &std::collections::BTreeMap<String, Vec<String>>) -> Profiles {
        Profiles {
            cache: HashMap::new(),
            overrides: overrides
                .iter()
                .map(|(profile, providers)| {
                    (
                        profile.clone(),
                        providers
                            .iter()
                            .map(|p| ChainLink {
                                provider: p.clone(),
                                model: None,
                            })
                            .collect(),
                    )
                })
                .collect(),
        }
    }

    /// The chain for `profile`, primary first. Empty when unknown.
    pub fn chain(&mut self, profile: &str, config_path: &Path) -> Vec<ChainLink> {
        if let Some(chain) = self.overrides.get(profile) {
            return chain.clone();
        }
        let mtime = std::fs::metadata(config_path)
            .and_then(|m| m.modified())
            .ok();
        if let Some((cached_mtime, chain)) = self.cache.get(config_path)
            && *cached_mtime == mtime
        {
            return chain.clone();
        }
        let chain = match std::fs::read_to_string(config_path) {
            Ok(text) => chain_from_yaml(&text).unwrap_or_else(|e| {
                tracing::warn!(file = %config_path.display(), "cannot read provider chain: {e}");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        self.cache
            .insert(config_path.to_path_buf(), (mtime, chain.clone()));
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_reads_primary_fallback_providers_and_legacy_fallback_model() {
        let text = r#"
model:
  provider: openai-codex
  default: gpt-5
  base_url: https://example.invalid
fallback_providers:
  - provider: openrouter
    model: x-ai/grok-4
  - {provider: anthropic, model: claude-sonnet}
fallback_model: {provider: gemini, model: gemini-2.5-pro}
"#;
        let chain = chain_from_yaml(text).unwrap();
        let names: Vec<&str> = chain.iter().map(|l| l.provider.as_str()).collect();
        assert_eq!(names, ["openai-codex", "openrouter", "anthropic", "gemini"]);
        assert_eq!(chain[0].model.as_deref(), Some("gpt-5"));
        assert_eq!(chain[1].model.as_deref(), Some("x-ai/grok-4"));
    }

    #[test]
    fn odd_shapes_are_skipped_not_fatal() {
        assert!(chain_from_yaml("model: gpt-5\n").unwrap().is_empty());
        assert_eq!(
            chain_from_yaml("model: {provider: xai}\nfallback_model: [{model: x}]\n")
                .unwrap()
                .len(),
            1
        );
        assert!(chain_from_yaml("model: [").is_err());
    }
}
