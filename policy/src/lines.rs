//! Budget lines for the request path, remembered per thread.
//!
//! A decision for an agent with many budgets spent most of its time building
//! the same counter keys and windows again (and, past a handful of lines, in
//! the allocator). A line is reused only when it was built from a budget at
//! the same address, that budget is still *equal* (an address reused by a
//! newer snapshot holding something else fails this), and for a calendar
//! window, `now` still falls inside it. A hit therefore gives exactly what
//! rebuilding would, and costs a few comparisons and a reference count.

use std::cell::RefCell;
use std::sync::Arc;

use caracal_api::snapshot::BudgetRule;
use chrono::{DateTime, Utc};

use crate::decision::BudgetLine;
use crate::window::{WindowError, WindowInstance, window_at};

/// Lines kept per thread; enough for the busiest agents' budgets, small
/// enough that a linear scan of addresses stays cheap.
const REMEMBERED: usize = 128;

struct Remembered {
    addr: usize,
    budget: BudgetRule,
    key: Arc<str>,
    window: WindowInstance,
}

thread_local! {
    static REMEMBERED_LINES: RefCell<Vec<Remembered>> = const { RefCell::new(Vec::new()) };
}

fn covers(window: &WindowInstance, now: DateTime<Utc>) -> bool {
    match window {
        WindowInstance::Calendar { start, end } => *start <= now && now < *end,
        WindowInstance::Rolling { .. } => true,
    }
}

/// The line `budget` reserves on at `now`.
pub(crate) fn line_for(budget: &BudgetRule, now: DateTime<Utc>) -> Result<BudgetLine, WindowError> {
    let addr = std::ptr::from_ref(budget) as usize;
    let hit = REMEMBERED_LINES.with(|r| {
        r.borrow()
            .iter()
            .find(|e| e.addr == addr)
            .filter(|e| covers(&e.window, now) && e.budget == *budget)
            .map(|e| BudgetLine {
                key: e.key.clone(),
                limit: budget.limit,
                window: e.window.clone(),
            })
    });
    if let Some(line) = hit {
        return Ok(line);
    }
    let window = window_at(&budget.window, now)?;
    let key: Arc<str> = counter_key(&budget.tree, &budget.counter, &window).into();
    let entry = Remembered {
        addr,
        budget: budget.clone(),
        key: key.clone(),
        window: window.clone(),
    };
    REMEMBERED_LINES.with(|r| {
        let mut lines = r.borrow_mut();
        if let Some(slot) = lines.iter_mut().find(|e| e.addr == addr) {
            *slot = entry;
        } else {
            if lines.len() >= REMEMBERED {
                lines.remove(0);
            }
            lines.push(entry);
        }
    });
    Ok(BudgetLine {
        key,
        limit: budget.limit,
        window,
    })
}

/// `{tree}:counter:<window>`: calendar windows are named by their start
/// (Unix seconds) so each window is a fresh counter; rolling windows keep
/// one bucketed counter.
pub(crate) fn counter_key(tree: &str, counter: &str, window: &WindowInstance) -> String {
    match window {
        WindowInstance::Calendar { start, .. } => {
            format!("{{{tree}}}:{counter}:c{}", start.timestamp())
        }
        WindowInstance::Rolling { seconds, .. } => format!("{{{tree}}}:{counter}:r{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use caracal_api::Micros;
    use caracal_api::snapshot::WindowSpec;

    use super::*;
    use crate::fixtures::daily;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn remembered_lines_never_go_stale() {
        let mut budget = BudgetRule {
            limit: Micros(10),
            window: daily("UTC"),
            counter: "p:team/a:team/bot".into(),
            tree: "team/bot".into(),
        };
        let first = line_for(&budget, at("2026-05-10T12:00:00Z")).unwrap();
        assert_eq!(&*first.key, "{team/bot}:p:team/a:team/bot:c1778371200");
        // Same budget, next day: a new window and key.
        let next_day = line_for(&budget, at("2026-05-11T00:00:00Z")).unwrap();
        assert_eq!(&*next_day.key, "{team/bot}:p:team/a:team/bot:c1778457600");
        // Same address, different content (a newer snapshot): rebuilt.
        budget.counter = "p:team/b:team/bot".into();
        budget.limit = Micros(20);
        let changed = line_for(&budget, at("2026-05-11T00:00:00Z")).unwrap();
        assert_eq!(&*changed.key, "{team/bot}:p:team/b:team/bot:c1778457600");
        assert_eq!(changed.limit, Micros(20));
        budget.window = WindowSpec::Rolling { seconds: 3600 };
        let rolling = line_for(&budget, at("2026-05-11T00:00:00Z")).unwrap();
        assert_eq!(&*rolling.key, "{team/bot}:p:team/b:team/bot:r3600");
        // A hit returns the same line as a rebuild.
        let again = line_for(&budget, at("2026-05-12T00:00:00Z")).unwrap();
        assert_eq!(again, rolling);
    }
}
