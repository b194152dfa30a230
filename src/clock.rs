//! Injected time. Everything that schedules or decides by time asks a [`Clock`], so tests
//! drive time by hand instead of sleeping.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// For clocks that move by hand: a receiver that changes whenever the time is set,
    /// so timers wait for the clock instead of the wall. `None` for real time.
    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<DateTime<Utc>>> {
        None
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    moved: tokio::sync::watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
            moved: tokio::sync::watch::channel(start).0,
        }
    }

    pub fn set(&self, t: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = t;
        self.moved.send_replace(t);
    }

    pub fn advance(&self, d: Duration) {
        let t = {
            let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
            *now += d;
            *now
        };
        self.moved.send_replace(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscribe(&self) -> Option<tokio::sync::watch::Receiver<DateTime<Utc>>> {
        Some(self.moved.subscribe())
    }
}
