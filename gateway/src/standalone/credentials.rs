//! Per-agent virtual keys for a standalone gateway, kept in the state dir.
//!
//! `STATE_DIR/credentials/NAMESPACE/AGENT.env` holds the same variables the
//! operator puts in an agent's Secret, ready for `source` or `--env-file`.
//! A key is made once and reused on every start, so agents keep working
//! across restarts; deleting the file issues a new key.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use super::{SetupError, io_error};
use crate::{
    config::{Provider, ProviderKind},
    identity::{KEY_PREFIX, KeyTable, digest, generate_key},
};

/// The environment an agent gets: base URLs through the gateway and its key.
pub fn env_file(
    gateway_url: &str,
    key: &str,
    openai: Option<&str>,
    anthropic: Option<&str>,
) -> String {
    let mut out =
        String::from("# Caracal credentials: route this agent's SDK calls through the gateway.\n");
    if let Some(p) = openai {
        out.push_str(&format!(
            "OPENAI_BASE_URL={gateway_url}/{p}/v1\nOPENAI_API_KEY={key}\n"
        ));
    }
    if let Some(p) = anthropic {
        out.push_str(&format!(
            "ANTHROPIC_BASE_URL={gateway_url}/{p}\nANTHROPIC_API_KEY={key}\n"
        ));
    }
    out.push_str(&format!("CARACAL_API_KEY={key}\n"));
    out
}

fn read_key(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("CARACAL_API_KEY="))
        .map(str::trim)
        .find(|k| k.starts_with(KEY_PREFIX) && k.len() == KEY_PREFIX.len() + 64)
        .map(str::to_owned)
}

/// Which provider an agent's OpenAI and Anthropic SDKs should use: the
/// first of the right kind it may reach (a `mock` serves either).
pub fn sdk_providers<'a>(
    allowed: &[String],
    providers: &'a [Provider],
) -> (Option<&'a str>, Option<&'a str>) {
    let usable = |p: &&Provider| allowed.is_empty() || allowed.iter().any(|a| a == &p.name);
    let pick = |kinds: &[ProviderKind]| {
        kinds
            .iter()
            .find_map(|k| providers.iter().filter(usable).find(|p| p.kind == *k))
            .map(|p| p.name.as_str())
    };
    (
        pick(&[
            ProviderKind::Openai,
            ProviderKind::OpenaiCompatible,
            ProviderKind::Mock,
        ]),
        pick(&[ProviderKind::Anthropic, ProviderKind::Mock]),
    )
}

/// Make sure every agent in `agents` (id -> allowed providers) has a key
/// file, and return the key table for all of them.
/// Where the credentials of agent `id` (`namespace/name`) are written.
pub fn file_of(state_dir: &Path, id: &str) -> PathBuf {
    let (ns, name) = id.split_once('/').unwrap_or(("default", id));
    state_dir
        .join("credentials")
        .join(ns)
        .join(format!("{name}.env"))
}

pub fn ensure(
    state_dir: &Path,
    gateway_url: &str,
    agents: &BTreeMap<String, Vec<String>>,
    providers: &[Provider],
) -> Result<KeyTable, SetupError> {
    let mut entries = Vec::new();
    for (id, allowed) in agents {
        let path = file_of(state_dir, id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let existing = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| read_key(&t));
        let key = existing.unwrap_or_else(generate_key);
        let (openai, anthropic) = sdk_providers(allowed, providers);
        let text = env_file(gateway_url, &key, openai, anthropic);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            write_private(&path, &text)?;
        }
        entries.push((digest(&key), id.clone()));
    }
    Ok(KeyTable::new(entries))
}

/// Replace `path` with `text`, readable by its owner only from the first
/// byte: the text goes to a sibling file created with mode 0600, which is
/// then renamed over `path` (so there is no moment when a key sits in a file
/// other local users may read, and a crash never leaves a half-written one).
fn write_private(path: &Path, text: &str) -> Result<(), SetupError> {
    use std::io::Write;
    let tmp = path.with_extension("env.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io_error(&tmp))?;
    file.write_all(text.as_bytes()).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests spell out their rows
mod tests {
    use super::*;

    fn p(name: &str, kind: ProviderKind) -> Provider {
        Provider {
            name: name.into(),
            kind,
            base_url: None,
            credential: None,
            tls_roots: None,
        }
    }

    #[test]
    fn sdk_base_urls_follow_the_agents_providers() {
        let providers = vec![
            p("mock", ProviderKind::Mock),
            p("openai", ProviderKind::Openai),
            p("claude", ProviderKind::Anthropic),
        ];
        let cases: Vec<(Vec<&str>, (Option<&str>, Option<&str>))> = vec![
            (vec![], (Some("openai"), Some("claude"))),
            (vec!["mock"], (Some("mock"), Some("mock"))),
            (vec!["openai"], (Some("openai"), None)),
            (vec!["nothing"], (None, None)),
        ];
        for (allowed, want) in cases {
            let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
            assert_eq!(sdk_providers(&allowed, &providers), want, "{allowed:?}");
        }
    }

    #[test]
    fn keys_are_kept_across_starts() {
        let dir = std::env::temp_dir().join(format!("caracal-cred-test-{}", uuid::Uuid::now_v7()));
        let providers = vec![p("mock", ProviderKind::Mock)];
        let agents: BTreeMap<String, Vec<String>> = [("team/bot".to_owned(), vec![])].into();
        ensure(&dir, "http://127.0.0.1:1", &agents, &providers).unwrap();
        let path = dir.join("credentials/team/bot.env");
        let first = std::fs::read_to_string(&path).unwrap();
        let key = read_key(&first).unwrap();
        assert!(first.contains("OPENAI_BASE_URL=http://127.0.0.1:1/mock/v1\n"));
        assert!(first.contains("ANTHROPIC_BASE_URL=http://127.0.0.1:1/mock\n"));
        assert!(first.contains(&format!("OPENAI_API_KEY={key}\n")));
        let table = ensure(&dir, "http://127.0.0.1:1", &agents, &providers).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        assert_eq!(table.agent_for(&key), Some("team/bot"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The key file is private, also when it replaces one that was not.
    #[cfg(unix)]
    #[test]
    fn credential_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("caracal-cred-mode-{}", uuid::Uuid::now_v7()));
        let providers = vec![p("mock", ProviderKind::Mock)];
        let agents: BTreeMap<String, Vec<String>> = [("team/bot".to_owned(), vec![])].into();
        let path = dir.join("credentials/team/bot.env");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "stale\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure(&dir, "http://127.0.0.1:1", &agents, &providers).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(read_key(&std::fs::read_to_string(&path).unwrap()).is_some());
        assert!(!path.with_extension("env.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
