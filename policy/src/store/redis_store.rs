//! Budget counters in Redis. Each operation is one Lua script, so a
//! reservation checks and holds on every line atomically, across any number
//! of gateways.
//!
//! Layout per line (`<prefix>:{tree}:<counter>:<window>`):
//! - the counter hash: `held` plus `spent` (calendar) or one field per
//!   rolling bucket;
//! - `…:h`, a sorted set of live holds, member `<id>:<amount>`, scored by
//!   expiry in milliseconds; expired holds are purged by the next script
//!   that touches the line;
//! - `<prefix>:{tree}:s:<id>`, a marker written only by a settle that
//!   arrives after its hold expired, so repeating it is a no-op.
//!
//! Every key of one request carries the same `{tree}` hash tag, so all of
//! them live in one Redis Cluster slot and the scripts stay legal there.

use caracal_api::Micros;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

use super::{
    BudgetStore, LineUsage, Reservation, ReserveOutcome, ReserveRequest, SettleOutcome, StoreError,
    StoreFuture, counter_expiry, rolling_relief, validate,
};
use crate::decision::BudgetLine;
use crate::window::WindowInstance;

const COMMON: &str = include_str!("lua/common.lua");
const RESERVE: &str = include_str!("lua/reserve.lua");
const SETTLE: &str = include_str!("lua/settle.lua");
const USAGE: &str = include_str!("lua/usage.lua");

/// Largest amount the scripts handle exactly: Lua numbers are doubles, so
/// 2^53 micro-dollars (about $9 billion).
pub const MAX_SCRIPT_AMOUNT: i64 = 1 << 53;

/// Bound on establishing the connection to Redis.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long the marker of a settle near or after its hold's expiry is kept,
/// so a retry of it is a no-op. (Settles well before expiry need no marker:
/// the missing hold says the reservation was settled; see
/// [`super::SETTLE_MARKER_MARGIN`].)
const SETTLE_MARKER_TTL_MS: i64 = 24 * 3600 * 1000;

/// Redis-backed [`BudgetStore`]. Cheap to clone; clones share one
/// multiplexed, self-reconnecting connection.
#[derive(Clone)]
pub struct RedisBudgetStore {
    conn: ConnectionManager,
    prefix: String,
    reserve: redis::Script,
    settle: redis::Script,
    usage: redis::Script,
}

impl std::fmt::Debug for RedisBudgetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{COMMON}\n{body}"))
}

/// `(kind, window_ms, bucket_ms)` as the scripts expect them.
fn window_args(window: &WindowInstance) -> (&'static str, i64, i64) {
    match window {
        WindowInstance::Calendar { .. } => ("c", 0, 1),
        WindowInstance::Rolling {
            seconds,
            bucket_seconds,
        } => (
            "r",
            (*seconds * 1000) as i64,
            (*bucket_seconds * 1000) as i64,
        ),
    }
}

/// How long from `now` a line's keys must live, in milliseconds. Relative
/// (PEXPIRE) rather than absolute, so key lifetimes follow the same clock as
/// the `now` the caller passes, not the Redis server's.
fn keep_ms(window: &WindowInstance, now: DateTime<Utc>) -> i64 {
    (counter_expiry(window, now) - now)
        .num_milliseconds()
        .max(1)
}

impl RedisBudgetStore {
    /// Connect to `url` (e.g. `redis://127.0.0.1:6379`). Every key starts
    /// with `prefix` (e.g. `caracal`), so tests and tenants can share a server.
    ///
    /// Connecting is bounded by [`CONNECT_TIMEOUT`]: a server that accepts
    /// the connection but never answers is an error, not a hang. Per-call
    /// timeouts are [`Budgets`](super::Budgets)' job.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| StoreError::Timeout(CONNECT_TIMEOUT * 2))?
        .map_err(backend)?;
        Ok(Self::with_connection(conn, prefix))
    }

    pub fn with_connection(conn: ConnectionManager, prefix: &str) -> Self {
        RedisBudgetStore {
            conn,
            prefix: prefix.to_owned(),
            reserve: script(RESERVE),
            settle: script(SETTLE),
            usage: script(USAGE),
        }
    }

    fn counter_key(&self, line: &BudgetLine) -> String {
        format!("{}:{}", self.prefix, line.key)
    }

    fn holds_key(&self, line: &BudgetLine) -> String {
        format!("{}:{}:h", self.prefix, line.key)
    }

    async fn do_reserve(&self, req: ReserveRequest<'_>) -> Result<ReserveOutcome, StoreError> {
        validate(&req)?;
        let now_ms = req.now.timestamp_millis();
        let ttl_ms = i64::try_from(req.ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at = req.now + chrono::Duration::milliseconds(ttl_ms);
        if req.lines.is_empty() {
            // Nothing to hold: no round trip, and no huge amount through Lua.
            return Ok(ReserveOutcome::Reserved(Reservation {
                id: req.id.to_owned(),
                lines: Vec::new(),
                amount: req.amount.max,
                expires_at,
            }));
        }
        let too_large = req.amount.min.get() > MAX_SCRIPT_AMOUNT
            || req.lines.iter().any(|l| l.limit.get() > MAX_SCRIPT_AMOUNT);
        if too_large {
            return Err(StoreError::Invalid(format!(
                "amounts above {MAX_SCRIPT_AMOUNT} micro-dollars cannot be counted exactly in Redis"
            )));
        }
        let mut inv = self.reserve.prepare_invoke();
        inv.arg(now_ms)
            .arg(expires_at.timestamp_millis())
            .arg(req.amount.min.get())
            .arg(req.amount.max.get().min(MAX_SCRIPT_AMOUNT))
            .arg(req.id);
        for line in req.lines {
            let (kind, window_ms, bucket_ms) = window_args(&line.window);
            inv.key(self.counter_key(line))
                .key(self.holds_key(line))
                .arg(line.limit.get())
                .arg(kind)
                .arg(keep_ms(&line.window, req.now))
                .arg(window_ms)
                .arg(bucket_ms);
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(backend)?;
        match reply.as_slice() {
            [1, amount] => Ok(ReserveOutcome::Reserved(Reservation {
                id: req.id.to_owned(),
                lines: req.lines.to_vec(),
                amount: Micros(*amount),
                expires_at,
            })),
            [0, line, available, oldest] => {
                let index = usize::try_from(*line).unwrap_or(usize::MAX);
                let window =
                    req.lines.get(index).map(|l| &l.window).ok_or_else(|| {
                        StoreError::Backend("reserve named an unknown line".into())
                    })?;
                let resets_at = match window {
                    WindowInstance::Calendar { end, .. } => Some(*end),
                    WindowInstance::Rolling {
                        seconds,
                        bucket_seconds,
                    } if *oldest >= 0 => rolling_relief(*seconds, *bucket_seconds, *oldest),
                    WindowInstance::Rolling { .. } => None,
                };
                Ok(ReserveOutcome::Exhausted {
                    line: index,
                    available: Micros(*available),
                    resets_at,
                })
            }
            other => Err(StoreError::Backend(format!(
                "unexpected reply from reserve script: {other:?}"
            ))),
        }
    }

    async fn do_settle(
        &self,
        res: &Reservation,
        actual: Micros,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        if actual.get() < 0 {
            return Err(StoreError::Invalid("actual cost is negative".into()));
        }
        let Some(first) = res.lines.first() else {
            return Ok(SettleOutcome::Settled);
        };
        let mut inv = self.settle.prepare_invoke();
        inv.arg(now.timestamp_millis())
            .arg(&res.id)
            .arg(res.amount.get())
            .arg(actual.get())
            .arg(res.marker_from().timestamp_millis())
            .arg(SETTLE_MARKER_TTL_MS);
        for line in &res.lines {
            let (kind, _, bucket_ms) = window_args(&line.window);
            inv.key(self.counter_key(line))
                .key(self.holds_key(line))
                .arg(kind)
                .arg(keep_ms(&line.window, now))
                .arg(bucket_ms);
        }
        inv.key(format!("{}:{{{}}}:s:{}", self.prefix, first.tree(), res.id));
        let mut conn = self.conn.clone();
        let settled: i64 = inv.invoke_async(&mut conn).await.map_err(backend)?;
        Ok(if settled == 1 {
            SettleOutcome::Settled
        } else {
            SettleOutcome::AlreadySettled
        })
    }

    async fn do_usage(
        &self,
        lines: &[BudgetLine],
        now: DateTime<Utc>,
    ) -> Result<Vec<LineUsage>, StoreError> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.usage.prepare_invoke();
        inv.arg(now.timestamp_millis());
        for line in lines {
            let (kind, window_ms, bucket_ms) = window_args(&line.window);
            inv.key(self.counter_key(line))
                .key(self.holds_key(line))
                .arg(kind)
                .arg(window_ms)
                .arg(bucket_ms);
        }
        let mut conn = self.conn.clone();
        let flat: Vec<i64> = inv.invoke_async(&mut conn).await.map_err(backend)?;
        if flat.len() != lines.len() * 2 {
            return Err(StoreError::Backend(
                "usage script returned a short reply".into(),
            ));
        }
        Ok(flat
            .chunks_exact(2)
            .map(|c| LineUsage {
                spent: Micros(c[0]),
                held: Micros(c[1]),
            })
            .collect())
    }
}

impl BudgetStore for RedisBudgetStore {
    fn reserve<'a>(&'a self, request: ReserveRequest<'a>) -> StoreFuture<'a, ReserveOutcome> {
        Box::pin(self.do_reserve(request))
    }

    fn settle<'a>(
        &'a self,
        reservation: &'a Reservation,
        actual: Micros,
        now: DateTime<Utc>,
    ) -> StoreFuture<'a, SettleOutcome> {
        Box::pin(self.do_settle(reservation, actual, now))
    }

    fn usage<'a>(
        &'a self,
        lines: &'a [BudgetLine],
        now: DateTime<Utc>,
    ) -> StoreFuture<'a, Vec<LineUsage>> {
        Box::pin(self.do_usage(lines, now))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let answer: String = redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            if answer == "PONG" {
                Ok(())
            } else {
                Err(StoreError::Backend(format!(
                    "PING answered {answer:?}, not PONG"
                )))
            }
        })
    }
}
