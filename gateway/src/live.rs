//! The configuration a gateway serves with, swapped whole on every change.
//!
//! Requests take a cheap `Arc` clone of the current [`Live`] when they
//! start, so a reload never changes the rules under a request in flight.

use std::{collections::HashMap, sync::Arc};

use caracal_api::snapshot::ConfigSnapshot;
use tokio::sync::watch;

use crate::identity::KeyTable;

/// The policy snapshot and the agents' key digests that go with it.
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// `None` until a snapshot arrives; every request is denied until then.
    pub snapshot: Option<Arc<ConfigSnapshot>>,
    pub keys: Arc<KeyTable>,
    /// Service-account token subjects (`system:serviceaccount:NS:NAME`) and
    /// the agent (`namespace/name`) each one is.
    pub service_accounts: Arc<HashMap<String, String>>,
}

impl Live {
    /// The agent that runs as the service account with token subject
    /// `subject`: the one lookup behind both service-account tokens and
    /// client certificates.
    pub fn agent_for_service_account(&self, subject: &str) -> Option<&str> {
        self.service_accounts.get(subject).map(String::as_str)
    }
}

/// Publishes new [`Live`] values to a running gateway.
pub type LiveSender = watch::Sender<Arc<Live>>;
pub type LiveReceiver = watch::Receiver<Arc<Live>>;

/// A channel starting with no configuration.
pub fn channel() -> (LiveSender, LiveReceiver) {
    watch::channel(Arc::new(Live::default()))
}
