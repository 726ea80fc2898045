//! Noticing that files changed on disk, for settings that are files
//! (certificates, CRLs, token keys) replaced while the gateway runs: by an
//! operator, by `kubectl cp`, or by the kubelet updating a mounted Secret or
//! ConfigMap. Files are polled and their contents compared (by a hash), so
//! a rewrite within the file system's timestamp granularity, or one that
//! keeps the size, still counts, and touching a file without changing it
//! does not; a file appearing or disappearing is a change.

use std::{
    hash::{DefaultHasher, Hasher},
    path::PathBuf,
    time::Duration,
};

/// What each file held at one moment (a hash of its bytes; `None` when it
/// could not be read).
#[derive(Debug, PartialEq, Eq)]
struct Stamps(Vec<Option<u64>>);

impl Stamps {
    fn of(paths: &[PathBuf]) -> Stamps {
        Stamps(
            paths
                .iter()
                .map(|path| {
                    let bytes = std::fs::read(path).ok()?;
                    let mut hasher = DefaultHasher::new();
                    hasher.write(&bytes);
                    Some(hasher.finish())
                })
                .collect(),
        )
    }
}

/// Every `every`, call `changed` if any of `paths` changed since the last
/// look. The first look is taken now, before this returns, so a change made
/// right after the call is noticed. Runs until the runtime stops.
pub fn watch(
    paths: Vec<PathBuf>,
    every: Duration,
    mut changed: impl FnMut() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let mut seen = Stamps::of(&paths);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let now = Stamps::of(&paths);
            if now != seen {
                seen = now;
                changed();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    #[tokio::test]
    async fn a_change_right_after_the_call_is_seen_and_no_change_is_not() {
        let dir = std::env::temp_dir().join(format!("caracal-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.json");
        std::fs::write(&file, "one").unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let task = watch(vec![file.clone()], Duration::from_millis(10), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        // Same size, written at once: only the bytes differ.
        std::fs::write(&file, "two").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one change, one call");
        std::fs::write(&file, "two").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "rewriting the same bytes is no change"
        );
        std::fs::remove_file(&file).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a removal is a change");
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
