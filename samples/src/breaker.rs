//! A circuit breaker for one edge: opens after consecutive failures, fails
//! fast while open, lets one trial call through after a cool-down
//! (half-open), and closes again when that call succeeds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The value of the `circuit_breaker.state` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A change of state, recorded as a span event on the call that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// Whether a call may go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Allowed as the half-open trial; carries the Open → HalfOpen transition.
    Trial(Transition),
    Rejected,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Instant,
    trial_in_flight: bool,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    pub name: String,
    failure_threshold: u32,
    cool_down: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(name: impl Into<String>, failure_threshold: u32, cool_down: Duration) -> Self {
        Self {
            name: name.into(),
            failure_threshold,
            cool_down,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: Instant::now(),
                trial_in_flight: false,
            }),
        }
    }

    pub fn admit(&self) -> Admission {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Admission {
        let Ok(mut inner) = self.inner.lock() else {
            return Admission::Allowed;
        };
        match inner.state {
            BreakerState::Closed => Admission::Allowed,
            BreakerState::Open if now.duration_since(inner.opened_at) >= self.cool_down => {
                inner.state = BreakerState::HalfOpen;
                inner.trial_in_flight = true;
                Admission::Trial(Transition {
                    from: BreakerState::Open,
                    to: BreakerState::HalfOpen,
                })
            }
            BreakerState::Open => Admission::Rejected,
            // One trial at a time; the others fail fast until it reports.
            BreakerState::HalfOpen if inner.trial_in_flight => Admission::Rejected,
            BreakerState::HalfOpen => {
                inner.trial_in_flight = true;
                Admission::Allowed
            }
        }
    }

    /// Reports the outcome of an admitted call; returns the transition it caused, if any.
    pub fn record(&self, success: bool) -> Option<Transition> {
        self.record_at(success, Instant::now())
    }

    fn record_at(&self, success: bool, now: Instant) -> Option<Transition> {
        let Ok(mut inner) = self.inner.lock() else {
            return None;
        };
        let from = inner.state;
        inner.trial_in_flight = false;
        if success {
            inner.consecutive_failures = 0;
            inner.state = BreakerState::Closed;
        } else {
            inner.consecutive_failures += 1;
            if from == BreakerState::HalfOpen
                || inner.consecutive_failures >= self.failure_threshold
            {
                inner.state = BreakerState::Open;
                inner.opened_at = now;
            }
        }
        (from != inner.state).then_some(Transition {
            from,
            to: inner.state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_fails_fast_then_half_opens_and_closes() {
        let breaker = CircuitBreaker::new("drone-management", 3, Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(breaker.admit_at(start), Admission::Allowed);
        assert_eq!(breaker.record_at(false, start), None);
        assert_eq!(breaker.record_at(false, start), None);
        let opened = breaker.record_at(false, start);
        assert_eq!(
            opened,
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open
            })
        );
        assert_eq!(
            breaker.admit_at(start + Duration::from_secs(1)),
            Admission::Rejected
        );

        let later = start + Duration::from_secs(2);
        assert_eq!(
            breaker.admit_at(later),
            Admission::Trial(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen
            })
        );
        assert_eq!(
            breaker.admit_at(later),
            Admission::Rejected,
            "only one trial at a time"
        );
        assert_eq!(
            breaker.record_at(true, later),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Closed
            })
        );
        assert_eq!(breaker.admit_at(later), Admission::Allowed);
    }

    #[test]
    fn a_failed_trial_opens_again_and_successes_reset_the_count() {
        let breaker = CircuitBreaker::new("edge", 2, Duration::from_millis(10));
        let start = Instant::now();
        breaker.record_at(false, start);
        breaker.record_at(true, start);
        assert_eq!(
            breaker.record_at(false, start),
            None,
            "the success reset the count"
        );
        assert!(breaker.record_at(false, start).is_some());
        let later = start + Duration::from_millis(10);
        assert!(matches!(breaker.admit_at(later), Admission::Trial(_)));
        assert_eq!(
            breaker.record_at(false, later),
            Some(Transition {
                from: BreakerState::HalfOpen,
                to: BreakerState::Open
            })
        );
        assert_eq!(breaker.admit_at(later), Admission::Rejected);
    }
}
