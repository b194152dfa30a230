//! Live queue state: agents, waiting calls, reservations, handle times and wait
//! estimates, rebuilt from the platform's events (not durable: after a restart it fills
//! again as events arrive; events for calls it no longer knows get FAILED_PRECONDITION).
//! Pure and clock-free: every operation takes `now`.

mod agents;
pub mod ewt;
pub mod floor;

pub use floor::{
    AgentCounts, CallEvent, CallHistory, DueCallback, EventOutcome, Floor, LiveConfig, LiveError,
    PendingOffers, Placement, QueueInfo, QueueSnapshot, RoutedCall,
};

#[cfg(test)]
mod tests;
