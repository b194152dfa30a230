//! Rule evaluation on a 1,000-rule plan with a realistic mix of matchers (country,
//! region, customer status, campaign, dialed number, intent, language, prefix, business
//! hours) of which about one in ten carries a CEL expression. Calls are drawn from a
//! seeded set so each run measures the same work; the per-decision figure is the
//! median of `decide` over that set.
//!
//! Run: `cargo bench --bench routing`.

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use holdless::domain::plan::PlanDoc;
use holdless::domain::{Call, Customer, CustomerId, PhoneNumber};
use holdless::routing::{compile, decide, CompiledPlan};

const COUNTRIES: &[&str] = &[
    "US", "CA", "GB", "IE", "FR", "DE", "ES", "IT", "NL", "BE", "AU", "NZ", "JP", "MX", "BR", "IN",
    "SG", "ZA", "SE", "NO",
];
const STATUSES: &[&str] = &["standard", "gold", "platinum", "at_risk", "delinquent"];
const INTENTS: &[&str] = &["billing", "sales", "support", "cancel", "technical"];
const LANGS: &[&str] = &["en", "fr", "de", "es", "it", "ja"];
const CALLERS: &[&str] = &[
    "+12125550100",
    "+13125550101",
    "+14165550100",
    "+442079460958",
    "+33142685300",
    "+4930123456",
    "+61291234567",
    "+81312345678",
    "+5215512345678",
    "+34912345678",
];

/// A tiny deterministic generator (xorshift), so the plan and calls are the same each run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn plan_with_rules(n: usize) -> CompiledPlan {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut text = String::new();
    for q in 0..20 {
        text += &format!(
            "[[queues]]\nid = \"q{q}\"\nskills = [\"s{q}\"]\n[queues.business_hours]\ntime_zone = \"America/New_York\"\nweekly = [{{ days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"], open = \"08:00\", close = \"20:00\" }}]\n\n"
        );
    }
    for c in 0..50 {
        text += &format!(
            "[[campaigns]]\nid = \"camp{c}\"\ndialed_numbers = [\"+1800555{c:04}\"]\ntracking_codes = [\"T{c}\"]\npriority_boost = 5\nqueue = \"q{}\"\n\n",
            c % 20
        );
    }
    for (i, caller) in CALLERS.iter().enumerate() {
        text += &format!(
            "[[locations]]\nprefix = \"{}\"\nregion = \"R{i}\"\n\n",
            &caller[..6]
        );
    }
    text += "[default_route]\nqueue = \"q0\"\n\n";
    // Generate five times as many rules as wanted, drop the ones an earlier rule
    // shadows (as a supervisor would), then keep the first `n`.
    for i in 0..(5 * n) {
        let mut m = String::new();
        // Every rule is specific in at least two dimensions, like real plans.
        if rng.chance(70) {
            m += &format!("countries = [\"{}\"]\n", rng.pick(COUNTRIES));
        } else {
            m += &format!(
                "countries = [\"{}\", \"{}\"]\n",
                rng.pick(COUNTRIES),
                rng.pick(COUNTRIES)
            );
        }
        if rng.chance(50) {
            m += &format!("regions = [\"R{}\"]\n", rng.next() % 30);
        }
        if rng.chance(70) {
            m += &format!("customer_statuses = [\"{}\"]\n", rng.pick(STATUSES));
        }
        if rng.chance(50) {
            m += &format!(
                "intents = [\"{}\", \"{}\"]\n",
                rng.pick(INTENTS),
                rng.pick(INTENTS)
            );
        }
        if rng.chance(15) {
            m += &format!("campaigns = [\"camp{}\"]\n", rng.next() % 50);
        }
        if rng.chance(10) {
            m += &format!("dialed_numbers = [\"+1800555{:04}\"]\n", rng.next() % 50);
        }
        if rng.chance(20) {
            m += &format!("languages = [\"{}\"]\n", rng.pick(LANGS));
        }
        if rng.chance(10) {
            m += "number_prefixes = [\"+1212\", \"+4420\"]\n";
        }
        if rng.chance(10) {
            m += &format!(
                "business_hours = \"{}\"\n",
                if rng.chance(50) { "open" } else { "closed" }
            );
        }
        if rng.chance(10) {
            m += &format!(
                "expression = \"local_hour >= {} && attributes['tier'] == 't{}'\"\n",
                rng.next() % 12,
                rng.next() % 4
            );
        }
        text += &format!(
            "[[rules]]\nid = \"r{i}\"\n[rules.match]\n{m}[rules.action]\nqueue = \"q{}\"\npriority = {}\n\n",
            rng.next() % 20,
            rng.next() % 50
        );
    }
    let mut doc = PlanDoc::from_toml(&text).expect("generated plan parses");
    // Drop the few generated rules an earlier one shadows, as a supervisor would.
    loop {
        match compile(doc.clone(), 1) {
            Ok(_) => {
                doc.rules.truncate(n);
                return compile(doc, 1).expect("a prefix of a valid plan is valid");
            }
            Err(issues) => {
                let mut shadowed: Vec<usize> = issues
                    .iter()
                    .filter_map(|i| {
                        i.field
                            .strip_prefix("rules[")?
                            .strip_suffix(']')?
                            .parse()
                            .ok()
                    })
                    .collect();
                assert!(!shadowed.is_empty(), "generated plan invalid: {issues:?}");
                shadowed.sort_unstable();
                for i in shadowed.into_iter().rev() {
                    doc.rules.remove(i);
                }
            }
        }
    }
}

fn calls(n: usize) -> Vec<(Call, Option<Customer>)> {
    let mut rng = Rng(42);
    (0..n)
        .map(|i| {
            let caller = rng.pick(CALLERS);
            let mut c = Call::new(&format!("call-{i}"));
            c.caller = Some(PhoneNumber::parse(caller).expect("bench numbers are E.164"));
            if rng.chance(30) {
                c.intent = Some(rng.pick(INTENTS).to_owned());
            }
            if rng.chance(20) {
                c.dialed = Some(format!("+1800555{:04}", rng.next() % 50));
            }
            if rng.chance(50) {
                c.language = Some(rng.pick(LANGS).to_owned());
            }
            c.attributes
                .insert("tier".into(), format!("t{}", rng.next() % 4));
            let customer = rng.chance(60).then(|| Customer {
                id: CustomerId::new_checked(format!("cust-{i}")),
                display_name: String::new(),
                phones: vec![caller.to_owned()],
                status: rng.pick(STATUSES).to_owned(),
                language: String::new(),
                time_zone: None,
                last_agent_id: "agent-1".into(),
                preferred_agent_id: String::new(),
                notes: "notes".into(),
                do_not_call: false,
                updated_at: Utc::now(),
            });
            (c, customer)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let now: DateTime<Utc> = "2026-11-25T15:00:00Z".parse().expect("fixed instant");
    let calls = calls(1_000);
    let mut group = c.benchmark_group("decide");
    for n in [10usize, 1_000] {
        let plan = plan_with_rules(n);
        let matched = calls
            .iter()
            .filter(|(c, cu)| decide(&plan, c, cu.as_ref(), now).rule_id.is_some())
            .count();
        eprintln!(
            "plan: {} rules kept of {n} generated, {} of {} calls match a rule",
            plan.rules.len(),
            matched,
            calls.len()
        );
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(
            BenchmarkId::new("rules", plan.rules.len()),
            &plan,
            |b, plan| {
                let mut i = 0;
                b.iter(|| {
                    let (call, customer) = &calls[i % calls.len()];
                    i += 1;
                    decide(plan, call, customer.as_ref(), now)
                })
            },
        );
        let mut explain_calls = calls.clone();
        for (c, _) in &mut explain_calls {
            c.explain = true;
        }
        group.bench_with_input(
            BenchmarkId::new("rules_explained", plan.rules.len()),
            &plan,
            |b, plan| {
                let mut i = 0;
                b.iter(|| {
                    let (call, customer) = &explain_calls[i % explain_calls.len()];
                    i += 1;
                    decide(plan, call, customer.as_ref(), now)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
