//! OTP-style restart intensity: how many failures a session's actors had within the configured
//! period, and how long to wait before the next restart. Pure bookkeeping; the supervisors
//! decide what to do with its answer.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::settings::{SupervisionSettings, backoff};

/// Failures per session within the sliding window of `restart_period`.
#[derive(Default)]
pub struct Intensity {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Intensity {
    /// Records one failure at `now`. While the session stays within its intensity, returns how
    /// long to wait before the restart (exponential in the failures of the window); `None` once
    /// more than `max_restarts` failures fall within `restart_period`.
    pub fn record(
        &self,
        session: &str,
        now: Instant,
        policy: &SupervisionSettings,
    ) -> Option<Duration> {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let log = map.entry(session.to_owned()).or_default();
        while log
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > policy.restart_period)
        {
            log.pop_front();
        }
        log.push_back(now);
        let recent = u32::try_from(log.len()).unwrap_or(u32::MAX);
        (recent <= policy.max_restarts).then(|| {
            backoff(
                recent.saturating_sub(1),
                policy.restart_backoff_min,
                policy.restart_backoff_max,
            )
        })
    }

    /// Forgets a session's failures (revived by an operator, or deleted).
    pub fn clear(&self, session: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SupervisionSettings {
        SupervisionSettings {
            max_restarts: 3,
            restart_period: Duration::from_secs(30),
            restart_backoff_min: Duration::from_millis(100),
            restart_backoff_max: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn failures_within_the_intensity_get_a_growing_delay() {
        let intensity = Intensity::default();
        let t0 = Instant::now();
        let first = intensity.record("a", t0, &policy()).expect("restart");
        let third = intensity
            .record("a", t0 + Duration::from_secs(1), &policy())
            .and_then(|_| intensity.record("a", t0 + Duration::from_secs(2), &policy()))
            .expect("restart");
        // Jitter is ±20%: 100 ms stays below 120 ms, 400 ms above 320 ms.
        assert!(first <= Duration::from_millis(120), "{first:?}");
        assert!(third >= Duration::from_millis(320), "{third:?}");
    }

    #[test]
    fn exceeding_the_intensity_gives_up() {
        let intensity = Intensity::default();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(
                intensity
                    .record("a", t0 + Duration::from_secs(i), &policy())
                    .is_some()
            );
        }
        assert!(
            intensity
                .record("a", t0 + Duration::from_secs(3), &policy())
                .is_none()
        );
    }

    #[test]
    fn failures_outside_the_period_are_forgotten() {
        let intensity = Intensity::default();
        let t0 = Instant::now();
        for i in 0..3 {
            intensity.record("a", t0 + Duration::from_secs(i), &policy());
        }
        let later = t0 + Duration::from_secs(40);
        assert!(intensity.record("a", later, &policy()).is_some());
    }

    #[test]
    fn sessions_are_counted_apart_and_clear_resets() {
        let intensity = Intensity::default();
        let t0 = Instant::now();
        for i in 0..3 {
            intensity.record("a", t0 + Duration::from_secs(i), &policy());
        }
        assert!(intensity.record("b", t0, &policy()).is_some());
        intensity.clear("a");
        assert!(intensity.record("a", t0, &policy()).is_some());
    }
}
