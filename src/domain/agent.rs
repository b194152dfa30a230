//! Agents as the telephony platform reports them.

use std::collections::BTreeMap;

/// An agent's state. `Reserved` is holdless's own: an agent held for a routed call or a
/// callback; platforms report the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentState {
    Offline,
    Available,
    Reserved,
    Busy,
    WrapUp,
}

/// Skill name -> level (1 or more).
pub type Skills = BTreeMap<String, u32>;

/// Whether `skills` covers every skill in `required` (at level 1 or more).
pub fn has_skills<'a>(skills: &Skills, required: impl IntoIterator<Item = &'a String>) -> bool {
    required
        .into_iter()
        .all(|s| skills.get(s).is_some_and(|&level| level >= 1))
}
