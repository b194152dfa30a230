//! Whether to offer a caller "call me back", and why. Pure: the queue's policy, the
//! rule's override and where the call stands.

use std::time::Duration;

use super::plan::{OfferCallback, Queue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferReason {
    /// The estimated wait exceeds the queue's threshold.
    LongWait,
    /// The queue is outside its business hours.
    QueueClosed,
    /// The queue holds its maximum of waiting calls.
    QueueFull,
    /// No agent able to serve the queue is staffed: the wait is unknown.
    NoAgents,
    /// The matching rule always offers.
    Rule,
}

/// Decides the offer. With `auto` (the default) the queue's callback policy decides:
/// offered when callbacks are enabled and the queue is closed, full, has nobody staffed
/// or the estimated wait exceeds `offer_after_ewt_secs`. A call with an agent reserved
/// is never offered a callback under `auto`.
pub fn callback_offer(
    queue: &Queue,
    rule: OfferCallback,
    queue_open: bool,
    queue_full: bool,
    agent_reserved: bool,
    estimated_wait: Option<Duration>,
) -> Option<OfferReason> {
    match rule {
        OfferCallback::Never => None,
        OfferCallback::Always => Some(OfferReason::Rule),
        OfferCallback::Auto => {
            if !queue.callback.enabled || agent_reserved {
                return None;
            }
            if !queue_open {
                Some(OfferReason::QueueClosed)
            } else if queue_full {
                Some(OfferReason::QueueFull)
            } else {
                match estimated_wait {
                    None => Some(OfferReason::NoAgents),
                    Some(w) if w.as_secs_f64() > f64::from(queue.callback.offer_after_ewt_secs) => {
                        Some(OfferReason::LongWait)
                    }
                    Some(_) => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::compile_toml;

    fn queue() -> Queue {
        let p = compile_toml(
            "[[queues]]\nid = \"q\"\n[queues.callback]\noffer_after_ewt_secs = 120\n[default_route]\nqueue = \"q\"\n",
            1,
        )
        .unwrap();
        p.queues[0].clone()
    }

    #[test]
    fn offers_only_past_the_threshold_and_says_why() {
        let q = queue();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            callback_offer(&q, OfferCallback::Auto, true, false, false, secs(120)),
            None
        );
        assert_eq!(
            callback_offer(&q, OfferCallback::Auto, true, false, false, secs(121)),
            Some(OfferReason::LongWait)
        );
        assert_eq!(
            callback_offer(&q, OfferCallback::Auto, false, false, false, secs(0)),
            Some(OfferReason::QueueClosed)
        );
        assert_eq!(
            callback_offer(&q, OfferCallback::Auto, true, true, false, secs(0)),
            Some(OfferReason::QueueFull)
        );
        assert_eq!(
            callback_offer(&q, OfferCallback::Auto, true, false, false, None),
            Some(OfferReason::NoAgents)
        );
        assert_eq!(
            callback_offer(&q, OfferCallback::Auto, true, false, true, secs(0)),
            None
        );
        assert_eq!(
            callback_offer(&q, OfferCallback::Never, false, true, false, None),
            None
        );
        assert_eq!(
            callback_offer(&q, OfferCallback::Always, true, false, true, secs(0)),
            Some(OfferReason::Rule)
        );
        let mut off = q.clone();
        off.callback.enabled = false;
        assert_eq!(
            callback_offer(&off, OfferCallback::Auto, false, true, false, None),
            None
        );
    }
}
