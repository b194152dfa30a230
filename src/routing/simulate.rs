//! Plan simulation: replays calls through a base plan and a candidate plan and reports
//! what would change. Pure: the caller gathers the calls (recorded or supplied), their
//! customers and the instant to decide each at.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};

use super::engine::decide;
use super::plan::CompiledPlan;
use crate::domain::{Call, Customer};

/// One call to replay, decided under both plans at `at`.
#[derive(Debug, Clone)]
pub struct ReplayCall {
    pub call: Call,
    pub customer: Option<Customer>,
    pub at: DateTime<Utc>,
}

/// Calls that go to another queue under the candidate plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMove {
    pub from: String,
    pub to: String,
    pub count: usize,
    /// The first call ids that moved this way, in replay order.
    pub samples: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulationReport {
    pub replayed: usize,
    /// Calls whose queue differs between the plans.
    pub moved: usize,
    /// Most moved first, then by queue ids.
    pub moves: Vec<QueueMove>,
    /// Candidate rules (in plan order) that matched none of the replayed calls.
    pub unmatched_rules: Vec<String>,
}

/// Decides every call under both plans (without explanations) and compares queues.
pub fn simulate(
    base: &CompiledPlan,
    candidate: &CompiledPlan,
    calls: &[ReplayCall],
    samples_per_move: usize,
) -> SimulationReport {
    let mut moves: BTreeMap<(String, String), QueueMove> = BTreeMap::new();
    let mut matched: HashSet<String> = HashSet::new();
    let mut moved = 0;
    for r in calls {
        let mut call = r.call.clone();
        call.explain = false;
        let before = decide(base, &call, r.customer.as_ref(), r.at);
        let after = decide(candidate, &call, r.customer.as_ref(), r.at);
        if let Some(rule) = &after.rule_id {
            if !matched.contains(rule) {
                matched.insert(rule.clone());
            }
        }
        if before.queue_id != after.queue_id {
            moved += 1;
            let m = moves
                .entry((before.queue_id.clone(), after.queue_id.clone()))
                .or_insert_with(|| QueueMove {
                    from: before.queue_id,
                    to: after.queue_id,
                    count: 0,
                    samples: Vec::new(),
                });
            m.count += 1;
            if m.samples.len() < samples_per_move {
                m.samples.push(call.call_id.as_str().to_owned());
            }
        }
    }
    let mut moves: Vec<QueueMove> = moves.into_values().collect();
    moves.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.from.cmp(&b.from))
            .then_with(|| a.to.cmp(&b.to))
    });
    SimulationReport {
        replayed: calls.len(),
        moved,
        moves,
        unmatched_rules: candidate
            .rules
            .iter()
            .filter(|r| !matched.contains(&r.id))
            .map(|r| r.id.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneNumber;
    use crate::routing::compile_toml;

    const PLAN: &str = r#"
[[queues]]
id = "a"
[[queues]]
id = "b"
[[rules]]
id = "gb"
[rules.match]
countries = ["GB"]
[rules.action]
queue = "a"
[[rules]]
id = "fr"
[rules.match]
countries = ["FR"]
[rules.action]
queue = "b"
[default_route]
queue = "a"
"#;

    fn call(id: &str, caller: &str) -> ReplayCall {
        let mut c = Call::new(id);
        c.caller = Some(PhoneNumber::parse(caller).unwrap());
        ReplayCall {
            call: c,
            customer: None,
            at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn counts_moved_calls_with_samples_and_unmatched_rules() {
        let base = compile_toml(PLAN, 1).unwrap();
        let candidate = compile_toml(
            &PLAN.replace("queue = \"a\"\n[[rules]]", "queue = \"b\"\n[[rules]]"),
            0,
        )
        .unwrap();
        let calls: Vec<ReplayCall> = (0..10)
            .map(|i| {
                let caller = if i % 2 == 0 {
                    "+442079460958"
                } else {
                    "+12125550100"
                };
                call(&format!("c{i}"), caller)
            })
            .collect();
        let r = simulate(&base, &candidate, &calls, 2);
        assert_eq!(r.replayed, 10);
        assert_eq!(r.moved, 5);
        assert_eq!(
            r.moves,
            vec![QueueMove {
                from: "a".into(),
                to: "b".into(),
                count: 5,
                samples: vec!["c0".into(), "c2".into()],
            }]
        );
        assert_eq!(r.unmatched_rules, vec!["fr".to_owned()]);
    }

    #[test]
    fn same_plan_moves_nothing() {
        let base = compile_toml(PLAN, 1).unwrap();
        let candidate = compile_toml(PLAN, 0).unwrap();
        let r = simulate(&base, &candidate, &[call("x", "+33142685300")], 5);
        assert_eq!((r.replayed, r.moved), (1, 0));
        assert_eq!(r.unmatched_rules, vec!["gb".to_owned()]);
    }
}
