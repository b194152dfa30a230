//! Routing: pure functions from a compiled plan and a call to a decision. No I/O, no
//! tonic, no sled. `compile` checks a plan document and builds the indexed plan;
//! `engine::decide` routes one call; `hours` holds business hours and DST-safe local
//! time; `expr` the optional CEL matcher.

pub mod compile;
mod country_zones;
pub mod engine;
pub mod expr;
pub mod hours;
pub mod index;
pub mod location;
pub mod offer;
pub mod plan;
pub mod simulate;

pub use compile::{compile, compile_toml};
pub use engine::{decide, AgentContext, Decision, RuleTrace, TraceOutcome};
pub use plan::CompiledPlan;

#[cfg(test)]
mod tests;
