//! Restart policy for one slot: replace a dead worker at once the first time, then
//! back off while it keeps dying young, so a crash loop costs a few forks a minute
//! instead of a fork storm. The goal: a worker that crashes on every request costs
//! at most about 6 forks a minute per slot after two minutes, while the other
//! slots keep serving.

use std::time::{Duration, Instant};

/// The first delay after the immediate retry; it doubles up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A worker that lived this long is healthy again: its slot's count restarts.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Consecutive deaths of young workers in this slot.
    pub failures: u32,
    /// When the slot's replacement is due, if it is delayed.
    pub respawn_at: Option<Instant>,
}

impl Backoff {
    /// Records a death after `lived` and returns how long to wait before respawning.
    pub fn record_failure(&mut self, lived: Duration) -> Duration {
        if lived >= HEALTHY_AFTER {
            self.failures = 0;
        }
        self.failures += 1;
        delay_for(self.failures)
    }
}

/// 0 for the first failure, then 1 s, 2 s, 4 s … capped at [`MAX_DELAY`], with
/// ±10 % jitter so several crash-looping slots do not fork in lockstep.
pub fn delay_for(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let exp = (failures - 2).min(16);
    let base = FIRST_DELAY.saturating_mul(1 << exp).min(MAX_DELAY);
    base.mul_f64(jitter(failures))
}

/// A deterministic spread in [0.9, 1.1): enough to de-synchronise slots without
/// a random number generator (tests stay exact to within the band).
fn jitter(seed: u32) -> f64 {
    let x = seed.wrapping_mul(2_654_435_761) >> 16;
    0.9 + f64::from(x % 200) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_respawns_at_once_then_doubles_to_the_cap() {
        let mut b = Backoff::default();
        assert_eq!(b.record_failure(Duration::ZERO), Duration::ZERO);
        let second = b.record_failure(Duration::ZERO);
        assert!(
            second >= Duration::from_millis(900) && second < Duration::from_millis(1100),
            "{second:?}"
        );
        let third = b.record_failure(Duration::ZERO);
        assert!(
            third >= Duration::from_millis(1800) && third < Duration::from_millis(2200),
            "{third:?}"
        );
        for _ in 0..20 {
            b.record_failure(Duration::ZERO);
        }
        let capped = b.record_failure(Duration::ZERO);
        assert!(
            capped <= MAX_DELAY.mul_f64(1.1) && capped >= MAX_DELAY.mul_f64(0.9),
            "{capped:?}"
        );
    }

    #[test]
    fn a_worker_that_lived_long_resets_its_slot() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.record_failure(Duration::from_secs(1));
        }
        assert_eq!(b.record_failure(HEALTHY_AFTER), Duration::ZERO);
        assert_eq!(b.failures, 1);
    }

    #[test]
    fn crash_loop_forks_at_most_a_few_times_a_minute_after_two_minutes() {
        // Reliability goal row 2: <= 6 forks per minute per slot after 2 minutes.
        let mut b = Backoff::default();
        let mut t = Duration::ZERO;
        let mut forks_after_two_minutes = 0;
        while t < Duration::from_secs(180) {
            let d = b.record_failure(Duration::ZERO);
            t += d + Duration::from_millis(10);
            if t > Duration::from_secs(120) {
                forks_after_two_minutes += 1;
            }
        }
        assert!(
            forks_after_two_minutes <= 6,
            "{forks_after_two_minutes} forks in the third minute"
        );
    }
}
