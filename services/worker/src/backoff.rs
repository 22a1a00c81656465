//! Jittered exponential backoff and jittered periods.

use std::time::Duration;

/// Doubles from `min` to `max`; each delay is jittered by ±20 % so a fleet that lost
/// its dispatcher at the same moment does not come back in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay to wait now; the following one is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        jitter(base, 0.2)
    }

    /// Back to `min` (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// `d` scaled by a random factor in `[1 - fraction, 1 + fraction]`.
pub fn jitter(d: Duration, fraction: f64) -> Duration {
    let fraction = fraction.clamp(0.0, 1.0);
    if fraction == 0.0 {
        return d;
    }
    d.mul_f64(rand::random_range((1.0 - fraction)..=(1.0 + fraction)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut bases = vec![];
        for _ in 0..10 {
            bases.push(b.next_delay());
        }
        assert!(bases[0] >= Duration::from_millis(80) && bases[0] <= Duration::from_millis(120));
        assert!(bases[1] >= Duration::from_millis(160) && bases[1] <= Duration::from_millis(240));
        for d in &bases[6..] {
            assert!(
                *d >= Duration::from_secs(4) && *d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(5), 0.1);
            assert!(d >= Duration::from_millis(4500) && d <= Duration::from_millis(5500));
        }
        assert_eq!(jitter(Duration::from_secs(1), 0.0), Duration::from_secs(1));
    }
}
