//! When to dial WhatsApp again after a connection ended. Pure: the connection loop feeds it
//! how the connection ended and sleeps for what it answers.
//!
//! - The failure count is reset only after a connection stayed up for `healthy_after`, so a
//!   flapping link keeps backing off instead of logging in dozens of times a minute.
//! - A stream error 429 (rate limit) or 503 (server going down) adds a penalty that a short
//!   healthy spell does not erase.
//! - The delay is never shorter than what WhatsApp Web (and whatsapp-rust's own loop) would
//!   wait for the same count: a Fibonacci series from 1 s, capped at 900 s.

use std::time::Duration;

use crate::settings::backoff;

/// What WhatsApp Web waits at most between attempts.
const WHATSAPP_MAX_DELAY: Duration = Duration::from_secs(900);
/// Extra failures a stream error 429 counts for (WhatsApp Web's rate-limit penalty).
const RATE_LIMIT_PENALTY: u32 = 5;
/// Extra failures a stream error 503 counts for.
const UNAVAILABLE_PENALTY: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The socket dropped, or connecting failed.
    Dropped,
    /// WhatsApp said 429 (rate limited) on the stream.
    RateLimited,
    /// WhatsApp said 503 (unavailable) on the stream.
    Unavailable,
}

/// How many `conflict` stream errors in a row are retried before the session gives up.
pub const MAX_CONFLICT_RETRIES: u32 = 3;

/// Why WhatsApp said another client took the session's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takeover {
    /// `<conflict type="replaced"/>`: another client logged in with these credentials; taking
    /// them back would start a tug of war.
    Replaced,
    /// Code 409 without that: a transient collision (e.g. a reconnect racing its own old
    /// socket), worth a few retries.
    Conflict,
}

/// Reads a stream error's `<conflict type>` child and `code`.
pub fn takeover_of(conflict_type: Option<&str>, code: Option<&str>) -> Takeover {
    match (conflict_type, code) {
        (Some("replaced"), _) => Takeover::Replaced,
        (None, Some("409")) => Takeover::Conflict,
        _ => Takeover::Replaced,
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub min: Duration,
    pub max: Duration,
    pub healthy_after: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct Reconnects {
    failures: u32,
    /// A penalty is pending: the next healthy spell does not reset the count.
    penalized: bool,
}

/// WhatsApp Web's delay for `attempt` (without its ±10% jitter).
pub fn whatsapp_delay(attempt: u32) -> Duration {
    let (mut a, mut b) = (1u64, 1u64);
    for _ in 0..attempt.min(64) {
        let next = a.saturating_add(b);
        a = b;
        b = next;
    }
    Duration::from_secs(a).min(WHATSAPP_MAX_DELAY)
}

impl Reconnects {
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A connection ended after being logged in for `up_for` (`None`: it never logged in);
    /// returns how long to wait before the next attempt.
    pub fn next_delay(
        &mut self,
        policy: &Policy,
        up_for: Option<Duration>,
        ending: Ending,
    ) -> Duration {
        if up_for.is_some_and(|up| up >= policy.healthy_after) && !self.penalized {
            self.failures = 0;
        }
        self.penalized = false;
        match ending {
            Ending::Dropped => {}
            Ending::RateLimited => {
                self.failures = self.failures.saturating_add(RATE_LIMIT_PENALTY);
                self.penalized = true;
            }
            Ending::Unavailable => {
                self.failures = self.failures.saturating_add(UNAVAILABLE_PENALTY);
                self.penalized = true;
            }
        }
        let ours = backoff(self.failures, policy.min, policy.max);
        let theirs = whatsapp_delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        ours.max(theirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        min: Duration::from_secs(1),
        max: Duration::from_secs(120),
        healthy_after: Duration::from_secs(60),
    };

    #[test]
    fn whatsapp_delays_follow_fibonacci_up_to_900s() {
        let secs: Vec<u64> = (0..8).map(|n| whatsapp_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 1, 2, 3, 5, 8, 13, 21]);
        assert_eq!(whatsapp_delay(40), Duration::from_secs(900));
    }

    #[test]
    fn a_flapping_link_keeps_backing_off() {
        let mut r = Reconnects::default();
        let short = Some(Duration::from_secs(2));
        let delays: Vec<Duration> = (0..6)
            .map(|_| r.next_delay(&POLICY, short, Ending::Dropped))
            .collect();
        assert!(delays[5] >= Duration::from_secs(8), "{delays:?}");
        assert_eq!(r.failures(), 6);
    }

    #[test]
    fn a_healthy_spell_resets_the_count() {
        let mut r = Reconnects::default();
        for _ in 0..5 {
            r.next_delay(&POLICY, None, Ending::Dropped);
        }
        let delay = r.next_delay(&POLICY, Some(Duration::from_secs(61)), Ending::Dropped);
        assert!(delay <= Duration::from_millis(1200), "{delay:?}");
    }

    #[test]
    fn a_rate_limit_waits_longer_and_survives_one_healthy_spell() {
        let mut r = Reconnects::default();
        let limited = r.next_delay(&POLICY, Some(Duration::from_secs(300)), Ending::RateLimited);
        assert!(limited >= Duration::from_secs(8), "{limited:?}");
        let after = r.next_delay(&POLICY, Some(Duration::from_secs(300)), Ending::Dropped);
        assert!(after >= Duration::from_secs(13), "{after:?}");
    }

    #[test]
    fn never_faster_than_whatsapp() {
        let mut r = Reconnects::default();
        for attempt in 0..30 {
            let delay = r.next_delay(&POLICY, None, Ending::Dropped);
            assert!(
                delay >= whatsapp_delay(attempt),
                "attempt {attempt}: {delay:?}"
            );
        }
    }

    #[test]
    fn replaced_and_conflict_are_told_apart() {
        assert_eq!(takeover_of(Some("replaced"), None), Takeover::Replaced);
        assert_eq!(
            takeover_of(Some("replaced"), Some("409")),
            Takeover::Replaced
        );
        assert_eq!(takeover_of(None, Some("409")), Takeover::Conflict);
        // Anything unrecognised is treated as the safe case: no tug of war.
        assert_eq!(takeover_of(None, None), Takeover::Replaced);
    }
}
