//! CPU limits by time slicing, as the kernel's CFS bandwidth control does for containers: in
//! each [`PERIOD`] a guest may run for its quota (`millicores / 1000 × PERIOD`); past it, the
//! guest is parked until the next period starts.
//!
//! The epoch callback fires once per epoch tick *while guest code runs* (the deadline is one
//! tick ahead and is only checked in wasm code), so the time between two consecutive
//! callbacks that are about one tick apart is time the guest spent running. A longer gap
//! means the guest waited in the host meanwhile (I/O, sleep): it is counted as one tick,
//! never more, so a guest that mostly waits is not throttled for its waiting.

use std::time::{Duration, Instant};

/// The accounting period (the kernel's default `cpu.cfs_period_us`).
pub const PERIOD: Duration = Duration::from_millis(100);

/// The time-slice account of one instance.
#[derive(Debug)]
pub(crate) struct Throttle {
    quota: Duration,
    tick: Duration,
    period_start: Instant,
    used: Duration,
    last: Option<Instant>,
}

impl Throttle {
    /// An account for `millicores` of CPU, with epoch ticks of `tick`.
    pub(crate) fn new(millicores: u64, tick: Duration, now: Instant) -> Throttle {
        let quota = PERIOD.mul_f64(millicores as f64 / 1000.0);
        Throttle {
            quota,
            tick,
            period_start: now,
            used: Duration::ZERO,
            last: None,
        }
    }

    /// One epoch callback at `now`: the instant to park the guest until, when its quota for
    /// this period is spent.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Option<Instant> {
        if now.duration_since(self.period_start) >= PERIOD {
            self.period_start = now;
            self.used = Duration::ZERO;
        }
        let gap = self.last.map(|last| now.saturating_duration_since(last));
        let ran = gap.filter(|g| *g <= self.tick * 2).unwrap_or(self.tick);
        self.used += ran;
        self.last = Some(now);
        if self.used <= self.quota {
            return None;
        }
        let resume = self.period_start + PERIOD;
        self.period_start = resume;
        self.used = Duration::ZERO;
        self.last = Some(resume);
        Some(resume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(10);

    /// Runs a guest that never waits for `total` and returns the time it was parked.
    fn parked_while_spinning(millicores: u64, total: Duration) -> Duration {
        let start = Instant::now();
        let mut throttle = Throttle::new(millicores, TICK, start);
        let mut now = start;
        let mut parked = Duration::ZERO;
        while now.duration_since(start) < total {
            now += TICK;
            if let Some(resume) = throttle.on_tick(now) {
                parked += resume.saturating_duration_since(now);
                now = resume.max(now);
            }
        }
        parked
    }

    #[test]
    fn a_spinning_guest_gets_its_share_of_each_period() {
        let total = Duration::from_secs(10);
        let parked = parked_while_spinning(250, total);
        let share = 1.0 - parked.as_secs_f64() / total.as_secs_f64();
        assert!((0.2..=0.35).contains(&share), "share {share}");
        let parked = parked_while_spinning(1000, total);
        assert!(
            parked.as_secs_f64() / total.as_secs_f64() < 0.05,
            "{parked:?}"
        );
    }

    #[test]
    fn waiting_is_not_counted_as_running() {
        let start = Instant::now();
        let mut throttle = Throttle::new(100, TICK, start);
        // Callbacks far apart: the guest mostly waits, and is never parked.
        for i in 1..100u32 {
            assert_eq!(throttle.on_tick(start + PERIOD * i), None);
        }
    }
}
