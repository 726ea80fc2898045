//! The calm lane: `caracal dev`'s ledger work at idle CPU priority.
//!
//! In `caracal dev` the gateway sequences its own batches. Signing, checking
//! and writing a batch into SQLite under a signed checkpoint is a burst of a
//! millisecond or more on one core, and on a small machine a request whose
//! thread wakes during that burst waits for it: on 2 cores at 3,000 req/s
//! this was most of the gateway's added p99 (docs/benchmarks.md). The calm
//! lane runs that work on a thread of its own under Linux's `SCHED_IDLE`
//! policy, with its own connection to the ledger opened from that thread (so
//! the SQLite worker thread sqlx starts for the connection inherits the
//! policy). Any request thread that wakes takes the core from it at once.
//!
//! An idle-priority thread gets almost no CPU while the machine is busy, and
//! leaving `SCHED_IDLE` again needs `CAP_SYS_NICE`, so the lane is only ever
//! a preference (see [`lane`]): a batch the lane has not picked up within
//! [`START_GRACE`] is taken back and stored at normal priority, and so is
//! every large batch (a backlog to catch up on) and every batch for
//! [`REST`] after the lane was slow. Should the thread ever stop (a panic
//! inside a batch), the lane is given up for good: that batch and every
//! later one are stored at normal priority, and it is logged once. Batches
//! still go one at a time: the spool's flusher waits for each, whichever
//! lane stores it.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use caracal_ledger::{batch::BatchSigner, keys::KeyPair, store::Ledger};
use tokio::sync::oneshot;

/// Largest batch offered to the calm lane. The flusher ships 32 events at a
/// time while it keeps up; a larger batch means events are piling up.
pub(crate) const CALM_MAX_EVENTS: usize = 128;
/// How long a batch waits for the calm lane to pick it up.
pub(crate) const START_GRACE: Duration = Duration::from_millis(5);
/// A calm batch slower than this (from offer to answer) means the machine
/// has little idle time left.
pub(crate) const SLOW: Duration = Duration::from_millis(50);
/// How long the lane is left alone after it was slow or did not start.
pub(crate) const REST: Duration = Duration::from_secs(1);

/// Where a batch is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The idle-priority thread.
    Calm,
    /// A blocking thread at normal priority.
    Normal,
}

/// The lane for a batch of `events`, the calm lane resting until
/// `resting_until`, or given up for good when its thread has `stopped`.
pub(crate) fn lane(
    events: usize,
    resting_until: Option<Instant>,
    stopped: bool,
    now: Instant,
) -> Lane {
    if stopped || events > CALM_MAX_EVENTS || resting_until.is_some_and(|t| now < t) {
        Lane::Normal
    } else {
        Lane::Calm
    }
}

/// A batch offered to the calm thread. Whoever sets `claimed` first (the
/// thread when it starts, or the sender when the grace runs out) stores it.
pub(crate) struct Job {
    pub events: Vec<Vec<u8>>,
    pub claimed: Arc<AtomicBool>,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// The sending side of the calm lane.
#[derive(Debug)]
pub(crate) struct CalmLane {
    jobs: mpsc::Sender<Job>,
    resting_until: Mutex<Option<Instant>>,
    /// The thread has stopped; never offered anything again.
    stopped: AtomicBool,
}

impl CalmLane {
    pub(crate) fn new(jobs: mpsc::Sender<Job>) -> Self {
        CalmLane {
            jobs,
            resting_until: Mutex::new(None),
            stopped: AtomicBool::new(false),
        }
    }

    /// Start the idle-priority thread with its own ledger connection to
    /// `url`. Fails where the policy cannot be set (not Linux) or the ledger
    /// does not open.
    pub(crate) async fn start(
        url: &str,
        signer: Arc<BatchSigner>,
        log_key: KeyPair,
    ) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::current();
        let (ready_tx, ready) = oneshot::channel();
        let (jobs, queue) = mpsc::channel();
        let url = url.to_owned();
        std::thread::Builder::new()
            .name("caracal-ledger".into())
            .spawn(move || {
                let _entered = runtime.enter();
                if let Err(e) = set_idle_priority() {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                // Opened here, so that the connections' worker threads start
                // from this thread and inherit its policy.
                let ledger = match runtime.block_on(Ledger::open(&url)) {
                    Ok(ledger) => ledger,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("opening the ledger: {e}")));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                serve(&queue, &ledger, &signer, &log_key, &runtime);
            })
            .map_err(|e| format!("starting the thread: {e}"))?;
        ready
            .await
            .map_err(|_| "the thread stopped while starting".to_owned())??;
        Ok(CalmLane::new(jobs))
    }

    fn resting_until(&self) -> Option<Instant> {
        *self.resting_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rest(&self) {
        let until = Instant::now() + REST;
        *self.resting_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// Give the lane up for good, saying so once.
    fn give_up(&self) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "the idle-priority ledger thread has stopped; every batch is stored at normal priority from now on"
            );
        }
    }

    /// Store `batch` on the calm lane if [`lane`] allows and the lane picks
    /// it up in time; otherwise with `normal`.
    pub(crate) async fn store<F>(
        &self,
        batch: &[Vec<u8>],
        normal: impl FnOnce() -> F,
    ) -> Result<(), String>
    where
        F: Future<Output = Result<(), String>>,
    {
        let offered = Instant::now();
        let stopped = self.stopped.load(Ordering::Acquire);
        if lane(batch.len(), self.resting_until(), stopped, offered) == Lane::Normal {
            return normal().await;
        }
        let claimed = Arc::new(AtomicBool::new(false));
        let (reply, answer) = oneshot::channel();
        let job = Job {
            events: batch.to_vec(),
            claimed: claimed.clone(),
            reply,
        };
        if self.jobs.send(job).is_err() {
            self.give_up();
            return normal().await;
        }
        tokio::pin!(answer);
        let answered = match tokio::time::timeout(START_GRACE, &mut answer).await {
            Ok(answered) => answered,
            Err(_) if !claimed.swap(true, Ordering::AcqRel) => {
                // Not picked up: the machine has no idle time now.
                self.rest();
                return normal().await;
            }
            Err(_) => answer.await,
        };
        if offered.elapsed() > SLOW {
            self.rest();
        }
        match answered {
            Ok(stored) => stored,
            // The thread claimed the batch and stopped without an answer. If
            // it got as far as the log, storing again is harmless: logged
            // events are skipped.
            Err(_) => {
                self.give_up();
                normal().await
            }
        }
    }
}

/// The calm thread's loop: sign and sequence each job it claims, until the
/// lane is dropped.
fn serve(
    queue: &mpsc::Receiver<Job>,
    ledger: &Ledger,
    signer: &BatchSigner,
    log_key: &KeyPair,
    runtime: &tokio::runtime::Handle,
) {
    while let Ok(job) = queue.recv() {
        if job.claimed.swap(true, Ordering::AcqRel) {
            continue; // taken back by the sender
        }
        let stored = super::sign_and_sequence(ledger, signer, log_key, job.events, runtime);
        let _ = job.reply.send(stored);
    }
}

#[cfg(target_os = "linux")]
fn set_idle_priority() -> Result<(), String> {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
    .map_err(|e| format!("setting SCHED_IDLE: {e:?}"))
}

#[cfg(not(target_os = "linux"))]
fn set_idle_priority() -> Result<(), String> {
    Err("an idle scheduling policy is only used on Linux".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn large_batches_and_a_resting_lane_go_to_normal_priority() {
        let now = Instant::now();
        let later = now + Duration::from_millis(10);
        let cases = [
            // (events, resting until, stopped, want)
            (1, None, false, Lane::Calm),
            (32, None, false, Lane::Calm),
            (CALM_MAX_EVENTS, None, false, Lane::Calm),
            (CALM_MAX_EVENTS + 1, None, false, Lane::Normal),
            (512, None, false, Lane::Normal),
            (32, Some(later), false, Lane::Normal),
            (32, Some(now), false, Lane::Calm),
            (32, Some(now - Duration::from_millis(1)), false, Lane::Calm),
            (1, None, true, Lane::Normal),
            (32, Some(now - Duration::from_millis(1)), true, Lane::Normal),
        ];
        for (events, resting, stopped, want) in cases {
            assert_eq!(
                lane(events, resting, stopped, now),
                want,
                "{events} {resting:?} {stopped}"
            );
        }
    }

    async fn counting_normal(count: &AtomicUsize) -> Result<(), String> {
        count.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// A lane whose thread never picks anything up (no idle CPU): the batch
    /// is stored at normal priority after the grace, exactly once, and the
    /// next batch goes there straight away.
    #[tokio::test]
    async fn a_batch_not_picked_up_in_time_is_taken_back() {
        let (jobs, queue) = mpsc::channel();
        let lane = CalmLane::new(jobs);
        let normal = AtomicUsize::new(0);
        let started = Instant::now();
        lane.store(&[b"e".to_vec()], || counting_normal(&normal))
            .await
            .unwrap();
        assert!(started.elapsed() >= START_GRACE);
        assert_eq!(normal.load(Ordering::SeqCst), 1);
        let job = queue.try_recv().unwrap();
        assert!(
            job.claimed.swap(true, Ordering::AcqRel),
            "claimed by the sender, so a late calm thread skips it"
        );

        let again = Instant::now();
        lane.store(&[b"f".to_vec()], || counting_normal(&normal))
            .await
            .unwrap();
        assert!(again.elapsed() < START_GRACE, "resting: no grace waited");
        assert_eq!(normal.load(Ordering::SeqCst), 2);
        assert!(queue.try_recv().is_err(), "nothing offered while resting");
    }

    /// A lane that claims the job stores it: the normal path never runs,
    /// even when the calm thread takes longer than the grace, and its error
    /// is the batch's.
    #[tokio::test]
    async fn a_claimed_batch_is_answered_by_the_calm_thread() {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            while let Ok(job) = queue.recv() {
                assert!(!job.claimed.swap(true, Ordering::AcqRel));
                std::thread::sleep(START_GRACE * 3);
                let answer = if job.events[0] == b"bad" {
                    Err("refused".to_owned())
                } else {
                    Ok(())
                };
                let _ = job.reply.send(answer);
            }
        });
        let lane = CalmLane::new(jobs);
        let normal = AtomicUsize::new(0);
        lane.store(&[b"good".to_vec()], || counting_normal(&normal))
            .await
            .unwrap();
        let refused = lane
            .store(&[b"bad".to_vec()], || counting_normal(&normal))
            .await;
        assert_eq!(refused, Err("refused".to_owned()));
        assert_eq!(normal.load(Ordering::SeqCst), 0);
    }

    /// A calm thread that stopped (its end of the queue dropped) leaves
    /// every batch to the normal path.
    #[tokio::test]
    async fn a_stopped_calm_thread_leaves_batches_to_normal_priority() {
        let (jobs, queue) = mpsc::channel();
        drop(queue);
        let lane = CalmLane::new(jobs);
        let normal = AtomicUsize::new(0);
        lane.store(&[b"e".to_vec()], || counting_normal(&normal))
            .await
            .unwrap();
        assert_eq!(normal.load(Ordering::SeqCst), 1);
    }

    /// A calm thread that claims a batch and stops without answering (a
    /// panic inside the batch): that batch is stored at normal priority at
    /// once, and the lane is never offered anything again, even after
    /// [`REST`] would have passed.
    #[tokio::test]
    async fn a_thread_that_stops_mid_batch_is_given_up_for_good() {
        let (jobs, queue) = mpsc::channel::<Job>();
        let lane = CalmLane::new(jobs);
        let died = std::thread::spawn(move || {
            let job = queue.recv().unwrap();
            assert!(!job.claimed.swap(true, Ordering::AcqRel));
            drop(job.reply);
            queue // kept, so that later offers would be seen
        });
        let normal = AtomicUsize::new(0);
        lane.store(&[b"e".to_vec()], || counting_normal(&normal))
            .await
            .unwrap();
        assert_eq!(normal.load(Ordering::SeqCst), 1);
        let queue = died.join().unwrap();

        *lane.resting_until.lock().unwrap() = Some(Instant::now() - REST);
        lane.store(&[b"f".to_vec()], || counting_normal(&normal))
            .await
            .unwrap();
        assert_eq!(normal.load(Ordering::SeqCst), 2);
        assert!(
            queue.try_recv().is_err(),
            "nothing offered to a stopped lane"
        );
    }

    #[tokio::test]
    async fn a_large_batch_is_never_offered() {
        let (jobs, queue) = mpsc::channel();
        let lane = CalmLane::new(jobs);
        let normal = AtomicUsize::new(0);
        let batch = vec![b"e".to_vec(); CALM_MAX_EVENTS + 1];
        lane.store(&batch, || counting_normal(&normal))
            .await
            .unwrap();
        assert_eq!(normal.load(Ordering::SeqCst), 1);
        assert!(queue.try_recv().is_err());
    }
}
