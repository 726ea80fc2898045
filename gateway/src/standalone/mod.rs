//! Running a gateway without a cluster: the pieces `caracal dev` (and later
//! a standalone gateway binary) put together. A config file for providers
//! and prices, Agent/Policy/Delegation YAML read from a directory, and
//! per-agent credentials kept in a state directory.

pub mod credentials;
pub mod file_config;
pub mod manifests;
pub mod token_keys;

/// Why a standalone setup could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid {
        path: std::path::PathBuf,
        message: String,
    },
    /// Several problems at once (every bad manifest document is reported,
    /// not only the first).
    #[error("{} problems: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<SetupError>),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::mtls::TlsError),
}

impl SetupError {
    /// Nothing, one problem as itself, or several together.
    pub(crate) fn from_problems(mut problems: Vec<SetupError>) -> Result<(), SetupError> {
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(SetupError::Several(problems)),
        }
    }
}

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_owned(),
        source,
    }
}
