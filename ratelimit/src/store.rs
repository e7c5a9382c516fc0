//! The counters, in Redis.
//!
//! Every ShouldRateLimit that touches counters is one EVALSHA of [`SCRIPT`] over all its
//! operations, so a request's descriptors are charged, read and refunded atomically
//! (Redis runs a script with no other command in between). The script is sent by its SHA1
//! and loaded on NOSCRIPT (a fresh or restarted Redis), by redis-rs's `Script`.
//!
//! The connection is a redis-rs `ConnectionManager`: one multiplexed connection shared by
//! every request, created lazily (the service starts while Redis is down) and replaced in
//! the background when it drops. Each call is bounded by the configured timeout, whatever
//! the connection is doing, so a request never waits longer than that for Redis.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use crate::log;
use crate::plan::{Op, OpKind};

/// KEYS: one counter per operation. ARGV: three per operation, in the same order:
/// `c` (charge), `r` (read) or `f` (refund); the hits; the TTL in seconds.
///
/// - charge: INCRBY the hits, then EXPIRE the TTL (the key dies after its window);
/// - read: GET (0 when absent), nothing written;
/// - refund: DECRBY the hits on an existing counter, clamped at 0 (SET 0 KEEPTTL, Redis
///   6.0+); an absent counter stays absent.
///
/// - an operation with a `once` key (a report id) runs only if that key did not exist (it is
///   set, for a day); otherwise it is a read: a report sent again is counted once.
///
/// Returns the counters' values after each operation.
pub const SCRIPT: &str = r"
local out = {}
for i, key in ipairs(KEYS) do
  local op, hits, ttl, once = ARGV[4 * i - 3], ARGV[4 * i - 2], ARGV[4 * i - 1], ARGV[4 * i]
  if once ~= '' and op ~= 'r' then
    if not redis.call('SET', once, '1', 'NX', 'EX', 86400) then
      op = 'r'
    end
  end
  if op == 'c' then
    out[i] = redis.call('INCRBY', key, hits)
    redis.call('EXPIRE', key, ttl)
  elseif op == 'f' then
    if redis.call('EXISTS', key) == 1 then
      local left = redis.call('DECRBY', key, hits)
      if left < 0 then
        redis.call('SET', key, '0', 'KEEPTTL')
        left = 0
      end
      out[i] = left
    else
      out[i] = 0
    end
  else
    out[i] = tonumber(redis.call('GET', key) or '0')
  end
end
return out
";

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Why a script call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// Redis may have run the script (a timeout after it was sent).
    pub maybe_applied: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    script: Arc<Script>,
    timeout: Duration,
    state: Arc<AtomicU8>,
    /// The URL with any password masked, for the log.
    shown_url: Arc<str>,
}

impl Store {
    /// A store for `url` (`redis://[:password@]host:port[/db]`). Connects on first use.
    pub fn new(url: &str, timeout: Duration) -> Result<Store, String> {
        let shown_url: Arc<str> = mask_password(url).into();
        let client = Client::open(url).map_err(|e| format!("--redis-url {shown_url}: {e}"))?;
        // Reconnection attempts are few and short: requests keep arriving, each failing
        // one triggers a new attempt, and none may wait past the timeout anyway.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("--redis-url {shown_url}: {e}"))?;
        Ok(Store {
            conn,
            script: Arc::new(Script::new(SCRIPT)),
            timeout,
            state: Arc::new(AtomicU8::new(UNKNOWN)),
            shown_url,
        })
    }

    /// Runs the operations in one script call; the counters' values after each.
    /// Runs the script. On failure, `Failure::maybe_applied` says whether Redis may have
    /// run it anyway (it timed out after the script was sent), which callers must not
    /// retry blindly; otherwise it was never run.
    pub async fn run(&self, ops: &[Op]) -> Result<Vec<i64>, Failure> {
        let mut invocation = self.script.prepare_invoke();
        for op in ops {
            let kind = match op.kind {
                OpKind::Charge => "c",
                OpKind::Read => "r",
                OpKind::Refund => "f",
            };
            invocation.key(&op.key);
            invocation
                .arg(kind)
                .arg(op.hits)
                .arg(op.ttl_seconds)
                .arg(op.once.as_deref().unwrap_or(""));
        }
        let mut conn = self.conn.clone();
        let call = invocation.invoke_async::<Vec<i64>>(&mut conn);
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(values)) if values.len() == ops.len() => Ok(values),
            Ok(Ok(values)) => Err(Failure {
                maybe_applied: true,
                message: format!(
                    "the script returned {} values for {} operations",
                    values.len(),
                    ops.len()
                ),
            }),
            // A lost answer after a timeout does not mean the script did not run. (An
            // error from a dropped connection is reported as unavailable: redis-rs cannot
            // tell whether the script was sent; reports with ids are safe to send again.)
            Ok(Err(e)) => Err(Failure {
                maybe_applied: e.is_timeout(),
                message: describe(&e),
            }),
            Err(_) => Err(Failure {
                maybe_applied: true,
                message: format!("no answer within {} ms", self.timeout.as_millis()),
            }),
        };
        self.observe(&result);
        result
    }

    /// PING, to notice state changes without traffic (and to reconnect before it comes).
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let ping = redis::cmd("PING");
        let call = ping.query_async::<String>(&mut conn);
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        self.observe(&result);
        result
    }

    /// One log line per change between reachable and unreachable.
    fn observe<T, E: std::fmt::Display>(&self, result: &Result<T, E>) {
        let now = if result.is_ok() { UP } else { DOWN };
        let before = self.state.swap(now, Ordering::Relaxed);
        if before == now {
            return;
        }
        match result {
            Ok(_) => log::info(&format!("redis {} reachable", self.shown_url)),
            Err(e) => log::warn(&format!(
                "redis {} unreachable: {e}; requests that need counters fail with UNAVAILABLE",
                self.shown_url
            )),
        }
    }
}

/// The error's kind and message; a Redis error never carries keys or arguments.
fn describe(e: &redis::RedisError) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_io_error() {
        "I/O error"
    } else {
        "error"
    };
    format!("{kind}: {e}")
}

/// `redis://user:secret@host` shown as `redis://user:***@host`.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split_once(':').map_or("", |(u, _)| u);
    if userinfo.contains(':') {
        format!("{scheme}://{user}:***@{host}")
    } else {
        format!("{scheme}://***@{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::mask_password;

    #[test]
    fn passwords_are_masked_in_the_log() {
        assert_eq!(
            mask_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            mask_password("redis://:s3cret@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            mask_password("redis://app:s3:cret@redis"),
            "redis://app:***@redis"
        );
        assert_eq!(mask_password("rediss://token@redis"), "rediss://***@redis");
        assert_eq!(mask_password("not a url"), "not a url");
    }
}
