//! The worker's clock: wall-clock timestamps (what the pod crate and the status use) that move
//! with tokio's monotonic clock, so every timer is tokio's and a paused test clock drives
//! back-offs and deadlines.

use std::time::Duration;

use tokio::time::Instant;
use wasmlet_pod::k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Wall-clock time anchored at the worker's start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    wall: Timestamp,
    mono: Instant,
}

impl Clock {
    /// A clock anchored now.
    pub(crate) fn new() -> Clock {
        Clock {
            wall: wall_now(),
            mono: Instant::now(),
        }
    }

    /// The current time.
    pub(crate) fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.mono.elapsed()).unwrap_or(SignedDuration::MAX);
        self.wall.checked_add(elapsed).unwrap_or(self.wall)
    }

    /// The tokio instant of a timestamp (the anchor for anything earlier).
    pub(crate) fn instant(&self, at: Timestamp) -> Instant {
        let offset = Duration::try_from(at.duration_since(self.wall)).unwrap_or_default();
        self.mono + offset
    }
}

/// The system's wall-clock time (the epoch if the system clock is before it).
fn wall_now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = i64::try_from(since_epoch.as_secs()).unwrap_or_default();
    let nanos = i32::try_from(since_epoch.subsec_nanos()).unwrap_or_default();
    Timestamp::new(seconds, nanos).unwrap_or(Timestamp::UNIX_EPOCH)
}
