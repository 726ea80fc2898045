//! Noticing that files changed on disk, for settings that are files
//! (certificates, CRLs, token keys) replaced while the gateway runs: by an
//! operator, by `kubectl cp`, or by the kubelet updating a mounted Secret or
//! ConfigMap. Files are polled: a change is a different modification time or
//! size, or a file appearing or disappearing.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

/// What each file looked like at one moment.
#[derive(Debug, PartialEq, Eq)]
struct Stamps(Vec<Option<(SystemTime, u64)>>);

impl Stamps {
    fn of(paths: &[PathBuf]) -> Stamps {
        Stamps(
            paths
                .iter()
                .map(|path| {
                    let meta = std::fs::metadata(path).ok()?;
                    Some((meta.modified().ok()?, meta.len()))
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
        std::fs::write(&file, "three").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one change, one call");
        std::fs::remove_file(&file).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "a removal is a change");
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
