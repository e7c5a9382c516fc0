//! Pure token-bucket arithmetic: no I/O, no clock, no timers.
//!
//! Levels are fixed-point *milli-units* in an `i64` (1 request = 1 token =
//! 1000 milli) so every worker computes bit-identical results and refill
//! never accumulates float drift. Refill is lazy: it is computed from the
//! stored `last_refill_ms` whenever the bucket is touched. All intermediate
//! products use `i128`/`u128`, and every level is clamped to
//! `[-MAX_LEVEL_MILLI, burst]`, so client-supplied token counts and clock
//! values cannot overflow anything.

use crate::config::TrafficClass;

/// Fixed-point scale: milli-units per token (or per request).
pub const MILLI: i64 = 1_000;
const MILLI_U64: u64 = 1_000;
/// Largest configurable rate or burst, in whole units (validated in config).
pub const MAX_LIMIT: f64 = 1e12;
/// Largest absolute level in milli-units; also bounds debt after a settle.
pub const MAX_LEVEL_MILLI: i64 = 1_000_000_000_000_000;
/// Backwards clock jumps up to this size freeze refill (the stored timestamp
/// is kept). A larger jump means the stored timestamp cannot be trusted (wall
/// clock stepped, or corrupt data), and freezing would deny a tenant for as
/// long as the jump, so refill is re-anchored at the current time instead.
pub const MAX_BACKWARDS_MS: u64 = 60_000;

const MS_PER_MIN: u128 = 60_000;
const ENCODING_TAG: u8 = 1;
/// Encoded size: tag byte + i64 level + u64 timestamp, little-endian.
pub const ENCODED_LEN: usize = 17;

/// A bucket's limits in fixed point. Built from config by [`Limit::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    rate_milli: u64,
    burst_milli: i64,
    floor_milli: i64,
}

impl Limit {
    /// `per_minute` refill rate and `burst` capacity in whole units, and the
    /// share of the burst reserved for interactive traffic. Returns `None`
    /// for values that [`super::QuotaConfig::validate`] rejects (non-finite,
    /// rate < 0.001, burst < 1, reserve outside `[0, 1)`); out-of-range large
    /// values are clamped to [`MAX_LIMIT`].
    pub fn new(per_minute: f64, burst: f64, reserve: f64) -> Option<Limit> {
        let rate_milli = to_milli(per_minute)?;
        let burst_milli = to_milli(burst)?;
        if burst_milli < MILLI || !(0.0..1.0).contains(&reserve) {
            return None;
        }
        // `as` on f64 saturates and the product is < burst_milli, so this
        // cannot overflow; clamp anyway so the floor is always inside.
        let floor_milli = ((burst_milli as f64) * reserve).round() as i64;
        Some(Limit {
            rate_milli: u64::try_from(rate_milli).ok()?,
            burst_milli,
            floor_milli: floor_milli.clamp(0, burst_milli),
        })
    }

    /// Refill per minute in whole units (rounded down), for headers.
    pub fn per_minute(&self) -> u64 {
        self.rate_milli / MILLI_U64
    }

    /// Capacity in whole units (rounded down).
    pub fn burst(&self) -> u64 {
        u64::try_from(self.burst_milli / MILLI).unwrap_or(0)
    }

    /// The level (milli) a class must leave behind after taking.
    fn floor_for(&self, class: TrafficClass) -> i64 {
        // Latency-sensitive classes may use the whole bucket; the others must leave the
        // interactive reserve (`reserve * burst`) in it.
        if class.is_interactive() {
            0
        } else {
            self.floor_milli
        }
    }
}

/// Converts a positive finite unit count to milli-units, clamped to the max.
fn to_milli(units: f64) -> Option<i64> {
    if !units.is_finite() || units <= 0.0 {
        return None;
    }
    let milli = (units.min(MAX_LIMIT) * 1000.0).round() as i64;
    (milli >= 1).then_some(milli)
}

/// What a bucket says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Taken; the new state must be written back.
    Allowed,
    /// Not enough right now; enough will have refilled after this long.
    Denied { retry_after_ms: u64 },
    /// The cost exceeds what this class can ever take from the bucket:
    /// retrying cannot help, so the caller should refuse with a clear message.
    TooLarge,
}

/// Result of [`try_take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Whole units this class could still take (never negative).
    pub remaining: u64,
    /// Milliseconds until the bucket is full again (0 when full).
    pub reset_ms: u64,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allowed
    }
}

/// Stored bucket state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    /// Milli-units available; negative means debt from an under-reservation.
    pub level_milli: i64,
    /// Time up to which refill has been credited. May lag `now` by less than
    /// one milli-unit's worth of refill so slow rates are not rounded away.
    pub last_refill_ms: u64,
}

impl BucketState {
    /// A full bucket: the state of a key that does not exist yet, or whose
    /// bytes are unreadable.
    pub fn full(limit: &Limit, now_ms: u64) -> BucketState {
        BucketState {
            level_milli: limit.burst_milli,
            last_refill_ms: now_ms,
        }
    }

    /// Compact, versioned encoding (see [`ENCODED_LEN`]).
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        // Zip instead of slice copies: provably panic-free.
        let bytes = std::iter::once(ENCODING_TAG)
            .chain(self.level_milli.to_le_bytes())
            .chain(self.last_refill_ms.to_le_bytes());
        let mut out = [0u8; ENCODED_LEN];
        for (dst, src) in out.iter_mut().zip(bytes) {
            *dst = src;
        }
        out
    }

    /// `None` for anything that is not a current-version encoding with a
    /// sane level; callers then treat the bucket as full ("reset").
    pub fn decode(bytes: &[u8]) -> Option<BucketState> {
        if bytes.len() != ENCODED_LEN || bytes.first() != Some(&ENCODING_TAG) {
            return None;
        }
        let level = i64::from_le_bytes(bytes.get(1..9)?.try_into().ok()?);
        let last = u64::from_le_bytes(bytes.get(9..17)?.try_into().ok()?);
        if !(-MAX_LEVEL_MILLI..=MAX_LEVEL_MILLI).contains(&level) {
            return None;
        }
        Some(BucketState {
            level_milli: level,
            last_refill_ms: last,
        })
    }

    /// Credits refill up to `now_ms`. Also clamps the level into the current
    /// limit, which is how a configuration push with a smaller burst applies
    /// to an existing bucket.
    pub fn refill(&mut self, limit: &Limit, now_ms: u64) {
        let burst = limit.burst_milli;
        self.level_milli = self.level_milli.clamp(-MAX_LEVEL_MILLI, burst);
        if now_ms <= self.last_refill_ms {
            if self.last_refill_ms.saturating_sub(now_ms) > MAX_BACKWARDS_MS {
                self.last_refill_ms = now_ms;
            }
            return;
        }
        if self.level_milli >= burst {
            self.last_refill_ms = now_ms;
            return;
        }
        let elapsed = u128::from(now_ms.saturating_sub(self.last_refill_ms));
        let rate = u128::from(limit.rate_milli.max(1));
        // elapsed < 2^64 and rate <= 1e15, so the product fits in u128.
        let gain = elapsed.saturating_mul(rate) / MS_PER_MIN;
        let room = i128::from(burst) - i128::from(self.level_milli);
        if i128::try_from(gain).unwrap_or(i128::MAX) >= room {
            self.level_milli = burst;
            self.last_refill_ms = now_ms;
            return;
        }
        // gain < room <= 2 * MAX_LEVEL_MILLI, so it fits in i64.
        let gain_i64 = i64::try_from(gain).unwrap_or(0);
        self.level_milli = self.level_milli.saturating_add(gain_i64);
        if rate >= MS_PER_MIN {
            // At >= 1 milli per ms the rounding loss is < 1 milli per call.
            self.last_refill_ms = now_ms;
        } else {
            // Slow bucket: credit only the time actually converted into
            // milli-units, carrying the remainder to the next call, or
            // frequent calls would round every refill down to zero.
            let used = (gain.saturating_mul(MS_PER_MIN)).div_ceil(rate);
            let used = u64::try_from(used).unwrap_or(u64::MAX);
            self.last_refill_ms = self.last_refill_ms.saturating_add(used).min(now_ms);
        }
    }

    /// Milliseconds until the level reaches `target_milli`, assuming no other
    /// traffic. Call after [`refill`](Self::refill) at `now_ms`.
    fn ms_until(&self, limit: &Limit, now_ms: u64, target_milli: i64) -> u64 {
        if self.level_milli >= target_milli {
            return 0;
        }
        let deficit = i128::from(target_milli) - i128::from(self.level_milli);
        let rate = i128::from(limit.rate_milli.max(1));
        let needed_ms = (deficit.saturating_mul(60_000) + rate - 1) / rate;
        // Refill counts from last_refill_ms: subtract the already-elapsed
        // carry, or add the wait for a clock that went backwards.
        let wait = needed_ms - (i128::from(now_ms) - i128::from(self.last_refill_ms));
        u64::try_from(wait.max(1)).unwrap_or(u64::MAX)
    }

    /// Whole units `class` may still take, and ms until full.
    pub fn view(&self, limit: &Limit, now_ms: u64, class: TrafficClass) -> (u64, u64) {
        let usable = self
            .level_milli
            .saturating_sub(limit.floor_for(class))
            .max(0);
        let remaining = u64::try_from(usable / MILLI).unwrap_or(0);
        (remaining, self.ms_until(limit, now_ms, limit.burst_milli))
    }
}

/// Refills, then takes `cost` units if `class` may. On `Allowed` the caller
/// writes `state` back; otherwise only the (idempotent) refill happened and
/// nothing needs writing.
pub fn try_take(
    state: &mut BucketState,
    cost: u64,
    now_ms: u64,
    limit: &Limit,
    class: TrafficClass,
) -> Decision {
    state.refill(limit, now_ms);
    let cost_milli = i128::from(cost) * i128::from(MILLI);
    let floor = limit.floor_for(class);
    let verdict = if cost_milli > i128::from(limit.burst_milli) - i128::from(floor) {
        Verdict::TooLarge
    } else {
        // cost_milli <= burst here, so it fits in i64 and target cannot overflow.
        let cost_milli = i64::try_from(cost_milli).unwrap_or(i64::MAX);
        let target = floor.saturating_add(cost_milli);
        if state.level_milli >= target {
            state.level_milli = state.level_milli.saturating_sub(cost_milli);
            Verdict::Allowed
        } else {
            Verdict::Denied {
                retry_after_ms: state.ms_until(limit, now_ms, target),
            }
        }
    };
    let (remaining, reset_ms) = state.view(limit, now_ms, class);
    Decision {
        verdict,
        remaining,
        reset_ms,
    }
}

/// Applies `delta` units after the fact: positive charges more (the level may
/// go negative: debt that later requests wait out), negative refunds (capped
/// at the burst). Never denies.
pub fn settle(state: &mut BucketState, delta: i64, now_ms: u64, limit: &Limit) {
    state.refill(limit, now_ms);
    let level = i128::from(state.level_milli) - i128::from(delta) * i128::from(MILLI);
    let clamped = level.clamp(i128::from(-MAX_LEVEL_MILLI), i128::from(limit.burst_milli));
    state.level_milli = i64::try_from(clamped).unwrap_or(0);
}

#[cfg(test)]
mod tests;
