//! Unit and property tests of plan compilation and routing, on the example plan and on
//! generated plans.

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use super::*;
use crate::domain::{Call, Customer, CustomerId, PhoneNumber};
use crate::service::EXAMPLE_PLAN;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Wednesday 2026-11-25 15:00 UTC: 10:00 in New York, 15:00 in London (both open).
const WEEKDAY_NOON: &str = "2026-11-25T15:00:00Z";

fn example() -> CompiledPlan {
    compile_toml(EXAMPLE_PLAN, 1).expect("example plan is valid")
}

fn call(caller: &str) -> Call {
    let mut c = Call::new("c1");
    c.caller = Some(PhoneNumber::parse(caller).unwrap());
    c
}

fn gold(phone: &str) -> Customer {
    Customer {
        id: CustomerId::new_checked("cust-1".into()),
        display_name: "Ada".into(),
        phones: vec![phone.into()],
        status: "gold".into(),
        language: "en".into(),
        time_zone: None,
        last_agent_id: "agent-7".into(),
        preferred_agent_id: String::new(),
        notes: "Renewal due in December.".into(),
        do_not_call: false,
        updated_at: Utc::now(),
    }
}

#[test]
fn uk_caller_routes_by_country_with_london_location() {
    let d = decide(&example(), &call("+442079460958"), None, at(WEEKDAY_NOON));
    assert_eq!(d.queue_id, "uk_support");
    assert_eq!(d.rule_id.as_deref(), Some("uk"));
    assert_eq!(d.location.country.as_deref(), Some("GB"));
    assert_eq!(d.location.region.as_deref(), Some("GB-LND"));
    assert_eq!(d.location.time_zone, Some(chrono_tz::Europe::London));
}

#[test]
fn gold_customer_with_the_same_number_goes_to_priority_with_last_agent() {
    let customer = gold("+442079460958");
    let d = decide(
        &example(),
        &call("+442079460958"),
        Some(&customer),
        at(WEEKDAY_NOON),
    );
    assert_eq!(d.queue_id, "priority");
    assert_eq!(d.priority, 50);
    assert_eq!(d.preferred_agent_id.as_deref(), Some("agent-7"));
    assert_eq!(d.preferred_agent_timeout_secs, 20);
    assert_eq!(d.agent_context.customer_notes, "Renewal due in December.");
}

#[test]
fn campaign_number_routes_to_campaign_queue_with_boost_until_the_campaign_ends() {
    let mut c = call("+13125550100");
    c.dialed = Some("+18005550199".into());
    let d = decide(&example(), &c, None, at(WEEKDAY_NOON));
    assert_eq!(d.queue_id, "sales");
    assert_eq!(d.rule_id.as_deref(), Some("winter-sale"));
    assert_eq!(d.priority, 30, "rule priority 10 + campaign boost 20");
    assert!(d.agent_context.campaign_script.starts_with("Winter sale"));
    let after = decide(&example(), &c, None, at("2027-02-01T15:00:00Z"));
    assert_eq!(after.queue_id, "general");
    assert_eq!(after.campaign_id, None);
    assert_eq!(after.priority, 0);
}

#[test]
fn tracking_code_identifies_the_campaign_too() {
    let mut c = call("+13125550100");
    c.tracking_code = Some("WINTER26".into());
    assert_eq!(
        decide(&example(), &c, None, at(WEEKDAY_NOON)).queue_id,
        "sales"
    );
}

#[test]
fn closed_hours_follow_the_closed_rule() {
    // Saturday 2026-11-28 20:00 UTC: UK support is closed on Saturdays.
    let d = decide(
        &example(),
        &call("+442079460958"),
        None,
        at("2026-11-28T20:00:00Z"),
    );
    assert_eq!(d.rule_id.as_deref(), Some("uk-closed"));
    assert_eq!(d.queue_id, "after_hours");
    // Christmas day in New York.
    let d = decide(
        &example(),
        &call("+12125550100"),
        None,
        at("2026-12-25T15:00:00Z"),
    );
    assert_eq!(d.rule_id.as_deref(), Some("na-closed"));
}

#[test]
fn explanation_names_first_failing_matcher_of_each_earlier_rule() {
    let mut c = call("+442079460958");
    c.explain = true;
    let d = decide(&example(), &c, None, at(WEEKDAY_NOON));
    let got: Vec<(String, String)> = d
        .explanation
        .iter()
        .map(|t| {
            let what = match &t.outcome {
                TraceOutcome::Matched => "matched".to_string(),
                TraceOutcome::Failed { matcher, .. } => matcher.to_string(),
                TraceOutcome::Disabled => "disabled".to_string(),
            };
            (t.rule_id.clone(), what)
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("transfer-loop", "transfer_loop"),
        ("fraud-flag", "expression"),
        ("vip", "customer_statuses"),
        ("winter-sale", "campaigns"),
        ("uk-closed", "business_hours"),
        ("uk", "matched"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn withheld_number_and_unknown_country_take_the_default_route() {
    let d = decide(&example(), &Call::new("x"), None, at(WEEKDAY_NOON));
    assert_eq!(d.rule_id, None);
    assert_eq!(d.queue_id, "general");
    assert_eq!(d.location, crate::domain::Location::default());
}

#[test]
fn explicit_location_wins_over_the_number() {
    let mut c = call("+12125550100");
    c.location_override = Some(crate::domain::Location {
        country: Some("GB".into()),
        region: None,
        time_zone: Some(chrono_tz::Europe::London),
    });
    assert_eq!(
        decide(&example(), &c, None, at(WEEKDAY_NOON)).queue_id,
        "uk_support"
    );
}

#[test]
fn longest_prefix_wins_and_country_zone_is_the_fallback() {
    let d = decide(&example(), &call("+441315550100"), None, at(WEEKDAY_NOON));
    assert_eq!(d.location.region.as_deref(), Some("GB-EDH"));
    let d = decide(&example(), &call("+33142685300"), None, at(WEEKDAY_NOON));
    assert_eq!(d.location.country.as_deref(), Some("FR"));
    assert_eq!(d.location.region, None);
    assert_eq!(d.location.time_zone, Some(chrono_tz::Europe::Paris));
}

#[test]
fn language_primary_tag_covers_regional_variants() {
    let mut c = call("+12125550100");
    c.language = Some("es-MX".into());
    let d = decide(&example(), &c, None, at(WEEKDAY_NOON));
    assert_eq!(d.rule_id.as_deref(), Some("spanish"));
    assert_eq!(d.extra_skills, vec!["spanish".to_string()]);
}

#[test]
fn cel_rule_matches_on_attributes() {
    let mut c = call("+12125550100");
    c.attributes.insert("fraud_flag".into(), "yes".into());
    assert_eq!(
        decide(&example(), &c, None, at(WEEKDAY_NOON)).queue_id,
        "fraud"
    );
}

fn issues(toml: &str) -> Vec<(String, String)> {
    match compile_toml(toml, 0) {
        Ok(_) => vec![],
        Err(v) => v.into_iter().map(|i| (i.field, i.description)).collect(),
    }
}

const BASE: &str = r#"
[[queues]]
id = "a"
[[queues]]
id = "b"
[default_route]
queue = "a"
"#;

#[test]
fn invalid_plan_reports_every_issue_with_its_path() {
    let plan = format!(
        "{BASE}{}",
        r#"
[[queues]]
id = "a"
[queues.business_hours]
time_zone = "Mars/Olympus"
weekly = []

[[campaigns]]
id = "c1"
dialed_numbers = ["+18005550100"]
queue = "nope"

[[campaigns]]
id = "c2"
dialed_numbers = ["+18005550100"]

[[rules]]
id = "r1"
[rules.match]
regions = ["US-NY"]
expression = "country =="
[rules.action]
queue = "missing"

[[rules]]
id = "r1"
[rules.match]
time_zones = ["Not/AZone"]
[rules.action]
queue = "a"
"#
    );
    let got = issues(&plan);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    for want in [
        "queues[2].id",
        "queues[2].business_hours.time_zone",
        "queues[2].business_hours.weekly",
        "campaigns[0].queue",
        "campaigns[1].dialed_numbers[0]",
        "rules[0].match.expression",
        "rules[0].action.queue",
        "rules[1].id",
        "rules[1].match.time_zones[0]",
    ] {
        assert!(paths.contains(&want), "missing {want} in {got:#?}");
    }
}

#[test]
fn rule_shadowed_by_an_earlier_broader_rule_is_reported() {
    let plan = format!(
        "{BASE}{}",
        r#"
[[rules]]
id = "uk"
[rules.match]
countries = ["GB", "IE"]
[rules.action]
queue = "a"

[[rules]]
id = "london"
[rules.match]
countries = ["GB"]
regions = ["GB-LND"]
[rules.action]
queue = "b"

[[rules]]
id = "london-gold"
[rules.match]
countries = ["GB"]
customer_statuses = ["gold"]
expression = "local_hour > 8"
[rules.action]
queue = "b"
"#
    );
    let got = issues(&plan);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].0, "rules[1]");
    assert!(got[0].1.contains("'uk'"), "{}", got[0].1);
    assert_eq!(got[1].0, "rules[2]");
}

#[test]
fn disabled_rules_neither_match_nor_shadow() {
    let plan = format!(
        "{BASE}{}",
        r#"
[[rules]]
id = "off"
enabled = false
[rules.match]
countries = ["US"]
[rules.action]
queue = "b"
[[rules]]
id = "us"
[rules.match]
countries = ["US"]
[rules.action]
queue = "b"
"#
    );
    let p = compile_toml(&plan, 1).unwrap();
    let mut c = call("+12125550100");
    c.explain = true;
    let d = decide(&p, &c, None, at(WEEKDAY_NOON));
    assert_eq!(d.rule_id.as_deref(), Some("us"));
    assert_eq!(d.explanation[0].outcome, TraceOutcome::Disabled);
}

#[test]
fn syntax_errors_and_unknown_keys_are_issues_not_panics() {
    assert!(!issues("this is not toml").is_empty());
    assert!(!issues(&format!("{BASE}\n[[rules]]\nid = \"x\"\ncolour = 1\n")).is_empty());
    assert!(
        !issues("").is_empty(),
        "a plan needs queues and a default route"
    );
}

#[test]
fn queue_contact_uri_comes_back_in_the_decision() {
    let d = decide(&example(), &call("+442079460958"), None, at(WEEKDAY_NOON));
    assert_eq!(d.queue_id, "uk_support");
    assert_eq!(d.queue_contact_uri, "sip:uk-support@queues.example.com");
    let plan = compile_toml(BASE, 1).unwrap();
    let d = decide(&plan, &call("+12125550100"), None, at(WEEKDAY_NOON));
    assert_eq!(d.queue_contact_uri, "", "no contact_uri in the plan: empty");
}

#[test]
fn queue_contact_uri_must_be_a_sip_or_tel_uri() {
    let plan = |uri: &str| {
        format!("[[queues]]\nid = \"a\"\ncontact_uri = {uri:?}\n[default_route]\nqueue = \"a\"\n")
    };
    for ok in [
        "sip:general@queues.example.com",
        "sips:q@h;transport=tls",
        "tel:+18005550100",
    ] {
        assert_eq!(issues(&plan(ok)), vec![], "{ok}");
    }
    for bad in [
        "general@queues.example.com",
        "http://x",
        "sip:",
        "sip:a b@h",
        "sip:<a>@h",
    ] {
        let got = issues(&plan(bad));
        assert_eq!(got.len(), 1, "{bad}: {got:?}");
        assert_eq!(got[0].0, "queues[0].contact_uri");
    }
}

// ---- properties ---------------------------------------------------------------------

const COUNTRIES: &[&str] = &["US", "GB", "FR", "CA"];
const STATUSES: &[&str] = &["gold", "standard", "at_risk"];
const CALLERS: &[&str] = &[
    "+12125550100",
    "+13125550101",
    "+442079460958",
    "+441315550100",
    "+33142685300",
    "+14165550100",
];
const INTENTS: &[&str] = &["billing", "sales", "support"];

fn arb_rule(i: usize) -> impl Strategy<Value = String> {
    (
        proptest::sample::subsequence(COUNTRIES, 0..=2),
        proptest::sample::subsequence(STATUSES, 0..=2),
        proptest::sample::subsequence(INTENTS, 0..=1),
        proptest::option::of(prop_oneof![Just("+1212"), Just("+44"), Just("+1")]),
        proptest::option::of(prop_oneof![Just("open"), Just("closed")]),
        proptest::option::of(prop_oneof![
            Just("local_hour >= 9"),
            Just("attributes['k'] == 'v'"),
            Just("caller.startsWith('+44')")
        ]),
        any::<bool>(),
        0..2usize,
    )
        .prop_map(
            move |(countries, statuses, intents, prefix, hours, expr, enabled, q)| {
                let list = |v: &[&str]| {
                    v.iter()
                        .map(|s| format!("\"{s}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut s =
                    format!("[[rules]]\nid = \"r{i}\"\nenabled = {enabled}\n[rules.match]\n");
                if !countries.is_empty() {
                    s += &format!("countries = [{}]\n", list(&countries));
                }
                if !statuses.is_empty() {
                    s += &format!("customer_statuses = [{}]\n", list(&statuses));
                }
                if !intents.is_empty() {
                    s += &format!("intents = [{}]\n", list(&intents));
                }
                if let Some(p) = prefix {
                    s += &format!("number_prefixes = [\"{p}\"]\n");
                }
                if let Some(h) = hours {
                    s += &format!("business_hours = \"{h}\"\n");
                }
                if let Some(e) = expr {
                    s += &format!("expression = \"{e}\"\n");
                }
                s += &format!("[rules.action]\nqueue = \"{}\"\n", ["a", "b"][q]);
                s
            },
        )
}

fn arb_plan() -> impl Strategy<Value = CompiledPlan> {
    proptest::collection::vec(0..1usize, 1..25)
        .prop_flat_map(|v| {
            v.iter()
                .enumerate()
                .map(|(i, _)| arb_rule(i))
                .collect::<Vec<_>>()
        })
        .prop_map(|rules| {
            let text = format!(
                "[[queues]]\nid = \"a\"\n[queues.business_hours]\ntime_zone = \"America/New_York\"\nweekly = [{{ days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"], open = \"09:00\", close = \"17:00\" }}]\n[[queues]]\nid = \"b\"\n[default_route]\nqueue = \"b\"\n{}",
                rules.join("\n")
            );
            // Generated plans may contain shadowed rules; compile them without that check
            // by building the document directly.
            let doc = crate::domain::plan::PlanDoc::from_toml(&text).expect("generated TOML parses");
            match compile(doc.clone(), 1) {
                Ok(p) => p,
                Err(_) => {
                    let mut doc = doc;
                    // Drop rules until the plan validates (shadowing is the only issue).
                    while compile(doc.clone(), 1).is_err() {
                        doc.rules.pop();
                    }
                    compile(doc, 1).expect("plan without rules compiles")
                }
            }
        })
}

fn arb_call() -> impl Strategy<Value = (Call, Option<Customer>, DateTime<Utc>)> {
    (
        proptest::sample::select(CALLERS),
        proptest::option::of(proptest::sample::select(STATUSES)),
        proptest::option::of(proptest::sample::select(INTENTS)),
        any::<bool>(),
        0i64..(14 * 24 * 3600),
    )
        .prop_map(|(caller, status, intent, attr, offset)| {
            let mut c = call(caller);
            c.intent = intent.map(str::to_owned);
            if attr {
                c.attributes.insert("k".into(), "v".into());
            }
            let customer = status.map(|s| {
                let mut g = gold(caller);
                g.status = s.into();
                g
            });
            let now = at("2026-11-23T00:00:00Z") + chrono::Duration::seconds(offset);
            (c, customer, now)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The indexed fast path and the rule-by-rule explanation always pick the same rule.
    #[test]
    fn indexed_and_explained_decisions_agree(plan in arb_plan(), (c, customer, now) in arb_call()) {
        let fast = decide(&plan, &c, customer.as_ref(), now);
        let mut slow_call = c.clone();
        slow_call.explain = true;
        let slow = decide(&plan, &slow_call, customer.as_ref(), now);
        prop_assert_eq!(&fast.rule_id, &slow.rule_id);
        prop_assert_eq!(&fast.queue_id, &slow.queue_id);
        let matched: Vec<_> = slow.explanation.iter().filter(|t| t.outcome == TraceOutcome::Matched).collect();
        prop_assert!(matched.len() <= 1);
        prop_assert_eq!(matched.first().map(|t| t.rule_id.clone()), slow.rule_id.clone());
    }

    /// Arbitrary text never panics the plan compiler.
    #[test]
    fn compiler_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let _ = compile_toml(&text, 0);
    }

    /// Arbitrary CEL-ish expressions never panic the compiler or the evaluator.
    #[test]
    fn expressions_never_panic(src in "[a-z_'()\\[\\]=!<>&|+\\-*/%.0-9 ]{0,80}") {
        if let Ok(e) = expr::Expr::compile(&src) {
            let attrs = std::collections::BTreeMap::new();
            let _ = e.eval(&expr::ExprVars {
                caller: "", dialed: "", country: "", region: "", time_zone: "", customer_id: "",
                customer_status: "", language: "", intent: "", campaign: "", tracking_code: "",
                local_hour: -1, attributes: &attrs,
            });
        }
    }
}

/// Decisions count in `holdless_routing_decisions_total` by rule and queue, whether the
/// rule's kept handle counts them (its first queue) or the one found by name (a
/// campaign rule's second queue), and the default route's too.
#[test]
fn decisions_count_by_rule_and_queue() {
    let plan = compile_toml(
        r#"
[[queues]]
id = "dc-one"
[[queues]]
id = "dc-two"

[[campaigns]]
id = "dc-camp-a"
name = "A"
dialed_numbers = ["+18005550901"]
starts_at = "2026-01-01T00:00:00Z"
ends_at = "2027-01-01T00:00:00Z"
queue = "dc-one"

[[campaigns]]
id = "dc-camp-b"
name = "B"
dialed_numbers = ["+18005550902"]
starts_at = "2026-01-01T00:00:00Z"
ends_at = "2027-01-01T00:00:00Z"
queue = "dc-two"

[[rules]]
id = "dc-campaigns"
[rules.match]
campaigns = ["dc-camp-a", "dc-camp-b"]
[rules.action]
priority = 1

[default_route]
queue = "dc-two"
"#,
        1,
    )
    .expect("plan compiles");
    let now = at(WEEKDAY_NOON);
    for (dialed, times) in [
        (Some("+18005550901"), 2),
        (Some("+18005550902"), 3),
        (None, 4),
    ] {
        for _ in 0..times {
            let mut c = call("+12125550100");
            c.dialed = dialed.map(str::to_owned);
            let d = decide(&plan, &c, None, now);
            plan.count_decision(d.rule_index, d.queue_index);
        }
    }
    let scrape = crate::metrics::prometheus::handle()
        .expect("recorder installs")
        .render();
    let value = |labels: &str| {
        let series = format!("holdless_routing_decisions_total{{{labels}}} ");
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("{series} missing from:\n{scrape}"))
            .to_owned()
    };
    assert_eq!(value(r#"rule="dc-campaigns",queue="dc-one""#), "2");
    assert_eq!(value(r#"rule="dc-campaigns",queue="dc-two""#), "3");
    assert_eq!(value(r#"rule="default",queue="dc-two""#), "4");
}
