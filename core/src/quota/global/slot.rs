//! One process's view of one global counter (a tenant's requests or tokens), kept in
//! shared data so every worker VM of the process admits from the same share. Pure
//! transitions: the store and the clock are the caller's.
//!
//! A slot holds, for the current window of the limit:
//! - `view`: what the service said was globally left at the last sync;
//! - `allowance`: what this process may still admit until the next sync (its share of
//!   `view`, less what it admitted since the sync was sent);
//! - `pending`: net charges not yet reported (negative: a refund is owed);
//! - `in_sync`: what the sync in flight reports;
//! - `local_used`: what this process admitted in the window, net of refunds (the
//!   local fallback's count).

use super::config::{Engine, OnUnavailable, Unit};

const TAG: u8 = 2;
const FIELDS: usize = 11;
/// Encoded size: tag + eleven 8-byte little-endian fields.
pub const ENCODED_LEN: usize = 1 + 8 * FIELDS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slot {
    /// Start of the window (ms since the epoch) the other fields belong to.
    pub window: u64,
    pub view: u64,
    pub allowance: i64,
    pub pending: i64,
    pub in_sync: i64,
    /// When the sync in flight was sent (0: none).
    pub sent_ms: u64,
    /// Last successful sync (0: none in this window yet).
    pub synced_ms: u64,
    /// When this window's slot was started: until the first sync, health counts from it.
    pub started_ms: u64,
    pub local_used: i64,
    /// Syncs that failed since the last success.
    pub failures: u64,
    /// The id of the report in `in_sync` (0: none): sent again with the same id until the
    /// service acknowledges it, which counts it once (docs/global-quotas.md).
    pub report: u64,
}

/// The share of `remaining` one of `replicas` processes may admit: rounded up, so the
/// last unit of a window can be admitted somewhere.
pub fn share(remaining: u64, replicas: u64) -> i64 {
    i64::try_from(remaining.div_ceil(replicas.max(1))).unwrap_or(i64::MAX)
}

/// Whole units of `limit` a process may admit alone in a window (the local fallback).
pub fn local_cap(limit: u32, engine: &Engine) -> i64 {
    share(u64::from(limit), engine.replicas())
}

/// What a slot is checked against: the counter's limit and window, the tenant's policy
/// while the service is unreachable, and the engine.
#[derive(Debug, Clone, Copy)]
pub struct Terms<'a> {
    pub limit: u32,
    pub unit: Unit,
    pub on_unavailable: OnUnavailable,
    pub engine: &'a Engine,
}

/// What the request path decided for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Admitted from the synced share.
    Global,
    /// The service is unreachable; admitted within `limit / expected_replicas`.
    LocalFallback,
    /// Not admitted; retrying after this long may help.
    Denied { retry_after_ms: u64, fallback: bool },
    /// The cost is above the whole limit: retrying cannot help.
    TooLarge,
    /// The service is unreachable and the tenant fails closed.
    Unavailable,
}

impl Slot {
    /// A fresh window: the whole limit is assumed left until the first sync says more.
    pub fn fresh(t: &Terms, now_ms: u64) -> Slot {
        Slot {
            window: t.unit.window_start(now_ms),
            view: u64::from(t.limit),
            allowance: share(u64::from(t.limit), t.engine.replicas()),
            started_ms: now_ms,
            ..Slot::default()
        }
    }

    /// This slot in the window of `now_ms`: unchanged, or fresh when the window rolled
    /// (what was not reported of the old window is dropped with it; the sync failures
    /// carry over, since they describe the service, not the window).
    pub fn current(self, t: &Terms, now_ms: u64) -> Slot {
        if self.window == t.unit.window_start(now_ms) {
            return self;
        }
        Slot {
            failures: self.failures,
            ..Slot::fresh(t, now_ms)
        }
    }

    /// Whether admissions may rely on the synced share.
    pub fn healthy(&self, engine: &Engine, now_ms: u64) -> bool {
        let last = self.synced_ms.max(self.started_ms);
        self.failures == 0 && now_ms.saturating_sub(last) <= engine.stale_after_ms()
    }

    /// The request path: take `cost` units (call on [`Slot::current`]). `reachable` is
    /// false when a strict call just failed. The new state is returned when something
    /// was taken.
    pub fn take(
        mut self,
        cost: u64,
        t: &Terms,
        now_ms: u64,
        reachable: bool,
    ) -> (Option<Slot>, Take) {
        let engine = t.engine;
        if cost > u64::from(t.limit) {
            return (None, Take::TooLarge);
        }
        let c = i64::try_from(cost).unwrap_or(i64::MAX);
        let window_end_ms = t.unit.window_end(self.window).saturating_sub(now_ms);
        if !reachable || !self.healthy(engine, now_ms) {
            return match t.on_unavailable {
                OnUnavailable::Closed => (None, Take::Unavailable),
                OnUnavailable::Local => {
                    if self.local_used.saturating_add(c) > local_cap(t.limit, engine) {
                        let denied = Take::Denied {
                            retry_after_ms: window_end_ms.max(1),
                            fallback: true,
                        };
                        return (None, denied);
                    }
                    self.charge(c);
                    (Some(self), Take::LocalFallback)
                }
            };
        }
        if c > self.allowance {
            // Globally exhausted: wait for the window; else the next sync brings a share.
            let retry_after_ms = if self.view < cost {
                window_end_ms
            } else {
                u64::from(engine.spec.sync_interval_ms)
            };
            let denied = Take::Denied {
                retry_after_ms: retry_after_ms.max(1),
                fallback: false,
            };
            return (None, denied);
        }
        self.charge(c);
        (Some(self), Take::Global)
    }

    /// Counts `c` admitted here: out of the share, into the next report.
    pub fn charge(&mut self, c: i64) {
        self.allowance = self.allowance.saturating_sub(c);
        self.pending = self.pending.saturating_add(c);
        self.local_used = self.local_used.saturating_add(c);
    }

    /// A correction after the fact (`delta` = billed - reserved; negative gives back), for
    /// a reservation made in `window`. A reservation of a window that has ended is not
    /// corrected: that window's counter is gone.
    pub fn correct(mut self, delta: i64, window: u64) -> Option<Slot> {
        if delta == 0 || window != self.window {
            return None;
        }
        self.charge(delta);
        Some(self)
    }

    /// A strict admission the service already counted: only the local count changes.
    pub fn admitted_remotely(mut self, c: i64) -> Slot {
        self.local_used = self.local_used.saturating_add(c);
        self
    }

    /// Hits the service counted for a request that was then refused: give them back at
    /// the next sync.
    pub fn refund_later(mut self, c: i64) -> Slot {
        self.pending = self.pending.saturating_sub(c);
        self
    }

    /// The sync takes what is pending into its report, or sends the unacknowledged one
    /// again under its id. `None` while a report is in flight and not yet overdue (its
    /// answer may still come). `new_id` names a new report.
    pub fn begin_sync(mut self, engine: &Engine, now_ms: u64, new_id: u64) -> Option<Slot> {
        let overdue = u64::from(engine.spec.timeout_ms).saturating_mul(4);
        if self.sent_ms != 0 && now_ms.saturating_sub(self.sent_ms) <= overdue {
            return None;
        }
        if self.in_sync == 0 {
            self.in_sync = self.pending;
            self.pending = 0;
            self.report = if self.in_sync == 0 { 0 } else { new_id.max(1) };
        }
        self.sent_ms = now_ms.max(1);
        Some(self)
    }

    /// The service answered for this slot's report, sent in `window`: `remaining` is
    /// what is globally left after it. The new share excludes what was admitted here
    /// while the report was in flight (it is in `pending`, not yet in `remaining`).
    pub fn synced(mut self, window: u64, remaining: u64, engine: &Engine, now_ms: u64) -> Slot {
        self.in_sync = 0;
        self.report = 0;
        self.sent_ms = 0;
        if window != self.window {
            return self;
        }
        self.view = remaining;
        self.allowance = share(remaining, engine.replicas()).saturating_sub(self.pending.max(0));
        self.synced_ms = now_ms.max(1);
        self.failures = 0;
        self
    }

    /// The report failed: it stays, to be sent again under the same id at the next sync
    /// (the service counts a report once, whether or not the failed call reached it).
    pub fn sync_failed(mut self) -> Slot {
        self.sent_ms = 0;
        self.failures = self.failures.saturating_add(1);
        self
    }

    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let fields: [u64; FIELDS] = [
            self.window,
            self.view,
            self.allowance as u64,
            self.pending as u64,
            self.in_sync as u64,
            self.sent_ms,
            self.synced_ms,
            self.started_ms,
            self.local_used as u64,
            self.failures,
            self.report,
        ];
        let bytes = std::iter::once(TAG).chain(fields.iter().flat_map(|f| f.to_le_bytes()));
        let mut out = [0u8; ENCODED_LEN];
        for (dst, src) in out.iter_mut().zip(bytes) {
            *dst = src;
        }
        out
    }

    /// `None` for anything but a current-version encoding.
    pub fn decode(bytes: &[u8]) -> Option<Slot> {
        if bytes.len() != ENCODED_LEN || bytes.first() != Some(&TAG) {
            return None;
        }
        let mut f = [0u64; FIELDS];
        for (i, chunk) in bytes.get(1..)?.chunks_exact(8).enumerate() {
            *f.get_mut(i)? = u64::from_le_bytes(chunk.try_into().ok()?);
        }
        let [window, view, allowance, pending, in_sync, sent_ms, synced_ms, started_ms, local_used, failures, report] =
            f;
        Some(Slot {
            window,
            view,
            allowance: allowance as i64,
            pending: pending as i64,
            in_sync: in_sync as i64,
            sent_ms,
            synced_ms,
            started_ms,
            local_used: local_used as i64,
            failures,
            report,
        })
    }
}

#[cfg(test)]
mod tests;
