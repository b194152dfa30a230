//! Deterministic simulations on the real live floor, driven by a manual clock: no
//! sockets, no sleeps, one seed one run.
//!
//! - [`line`]: the line-fairness check. A seeded generator plays random arrivals,
//!   priorities, preferred agents, callback requests and outcomes, agents freeing at
//!   the same instant, reservation lapses, answers, abandons, transfers, calling
//!   windows and dialers coming and going through the floor, with the scheduler's side
//!   of matching (take a match, dispatch it or park it) played as the scheduler plays
//!   it, and checks the line's promises after every step.
//! - [`day`]: the day simulator behind `holdless simulate-day`: arrivals, staffing,
//!   patience and callbacks played through the same floor and the product's KPI
//!   counting on a virtual clock, with and without callbacks.

pub mod day;
pub mod line;
