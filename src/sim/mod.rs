//! Deterministic simulations on the real live floor, driven by a manual clock: no
//! sockets, no sleeps, one seed one run.
//!
//! - [`line`]: the line-fairness check. A seeded generator plays random arrivals,
//!   priorities, preferred agents, callback requests and outcomes, agents freeing at
//!   the same instant, reservation lapses, answers, abandons, transfers, calling
//!   windows and dialers coming and going through the floor, with the scheduler's side
//!   of matching (take a match, dispatch it or park it) played as the scheduler plays
//!   it, and checks the line's promises after every step.

pub mod line;
