//! Plan validation and compilation. Every problem is reported at once, each with its
//! path in the document (`rules[3].match.regions[0]`), so a supervisor fixes a plan in
//! one round trip. A plan with any issue is never activated.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::expr::Expr;
use super::hours::{parse_weekday, BusinessHours, ClockTime};
use super::index::RuleIndex;
use super::plan::*;
use crate::domain::limits::*;
use crate::domain::plan::*;
use crate::domain::FieldViolation;

/// Parses and compiles a TOML plan.
pub fn compile_toml(text: &str, version: u64) -> Result<CompiledPlan, Vec<FieldViolation>> {
    if text.len() > MAX_PLAN_BYTES {
        return Err(vec![FieldViolation::new(
            "plan",
            format!(
                "plan is {} bytes, at most {MAX_PLAN_BYTES} allowed",
                text.len()
            ),
        )]);
    }
    let doc = PlanDoc::from_toml(text).map_err(|e| vec![FieldViolation::new("plan", e)])?;
    compile(doc, version)
}

/// Checks a plan document and builds the indexed plan.
pub fn compile(doc: PlanDoc, version: u64) -> Result<CompiledPlan, Vec<FieldViolation>> {
    let mut c = Checker::default();
    c.limit("queues", doc.queues.len(), MAX_QUEUES);
    c.limit("campaigns", doc.campaigns.len(), MAX_CAMPAIGNS);
    c.limit("rules", doc.rules.len(), MAX_RULES);
    c.limit("locations", doc.locations.len(), MAX_LOCATION_PREFIXES);
    if !c.issues.is_empty() {
        return Err(c.issues);
    }

    let mut queue_by_id = HashMap::new();
    let mut queues = Vec::with_capacity(doc.queues.len());
    for (i, q) in doc.queues.iter().enumerate() {
        let p = format!("queues[{i}]");
        if let Some(id) = c.id(&format!("{p}.id"), &q.id) {
            if queue_by_id.insert(id.clone(), i).is_some() {
                c.issue(format!("{p}.id"), format!("duplicate queue id '{id}'"));
            }
        }
        queues.push(c.queue(&p, q));
    }
    if doc.queues.is_empty() {
        c.issue("queues", "a plan needs at least one queue");
    }

    let mut campaigns = Vec::with_capacity(doc.campaigns.len());
    let mut campaign_ids = HashSet::new();
    let mut campaigns_by_dialed: HashMap<String, Vec<usize>> = HashMap::new();
    let mut campaigns_by_code: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, cd) in doc.campaigns.iter().enumerate() {
        let p = format!("campaigns[{i}]");
        if let Some(id) = c.id(&format!("{p}.id"), &cd.id) {
            if !campaign_ids.insert(id.clone()) {
                c.issue(format!("{p}.id"), format!("duplicate campaign id '{id}'"));
            }
        }
        let starts_at = c.instant(&format!("{p}.starts_at"), cd.starts_at.as_deref());
        let ends_at = c.instant(&format!("{p}.ends_at"), cd.ends_at.as_deref());
        if let (Some(s), Some(e)) = (starts_at, ends_at) {
            if e <= s {
                c.issue(format!("{p}.ends_at"), "must be after starts_at");
            }
        }
        let queue = cd.queue.as_deref().and_then(|q| {
            let found = queue_by_id.get(q).copied();
            if found.is_none() {
                c.issue(format!("{p}.queue"), format!("unknown queue '{q}'"));
            }
            found
        });
        c.text(&format!("{p}.script"), &cd.script, MAX_TEXT_LEN);
        c.text(&format!("{p}.name"), &cd.name, MAX_TEXT_LEN);
        let campaign = Campaign {
            id: cd.id.clone(),
            name: cd.name.clone(),
            starts_at,
            ends_at,
            priority_boost: cd.priority_boost,
            queue,
            script: cd.script.clone(),
        };
        for (k, d) in cd.dialed_numbers.iter().enumerate() {
            let path = format!("{p}.dialed_numbers[{k}]");
            if c.dialed(&path, d) {
                c.overlap(&path, d, &campaign, &campaigns, campaigns_by_dialed.get(d));
                campaigns_by_dialed.entry(d.clone()).or_default().push(i);
            }
        }
        for (k, t) in cd.tracking_codes.iter().enumerate() {
            let path = format!("{p}.tracking_codes[{k}]");
            if c.label(&path, t) {
                c.overlap(&path, t, &campaign, &campaigns, campaigns_by_code.get(t));
                campaigns_by_code.entry(t.clone()).or_default().push(i);
            }
        }
        if cd.dialed_numbers.is_empty() && cd.tracking_codes.is_empty() {
            c.issue(
                p.clone(),
                "a campaign needs at least one dialed number or tracking code",
            );
        }
        campaigns.push(campaign);
    }

    let mut prefixes = HashMap::new();
    let mut longest_prefix = 0;
    for (i, l) in doc.locations.iter().enumerate() {
        let p = format!("locations[{i}]");
        if c.prefix(&format!("{p}.prefix"), &l.prefix) {
            longest_prefix = longest_prefix.max(l.prefix.len());
            let entry = PrefixEntry {
                region: (!l.region.is_empty()).then(|| l.region.clone()),
                time_zone: if l.time_zone.is_empty() {
                    None
                } else {
                    c.tz(&format!("{p}.time_zone"), &l.time_zone)
                },
            };
            if !l.region.is_empty() {
                c.label(&format!("{p}.region"), &l.region);
            }
            if prefixes.insert(l.prefix.clone(), entry).is_some() {
                c.issue(
                    format!("{p}.prefix"),
                    format!("duplicate prefix '{}'", l.prefix),
                );
            }
        }
    }

    let mut rule_ids = HashSet::new();
    let mut rules = Vec::with_capacity(doc.rules.len());
    for (i, r) in doc.rules.iter().enumerate() {
        let p = format!("rules[{i}]");
        if let Some(id) = c.id(&format!("{p}.id"), &r.id) {
            if !rule_ids.insert(id.clone()) {
                c.issue(format!("{p}.id"), format!("duplicate rule id '{id}'"));
            }
        }
        c.text(&format!("{p}.description"), &r.description, MAX_TEXT_LEN);
        let matcher = c.matcher(
            &format!("{p}.match"),
            &r.matcher,
            &campaign_ids,
            &queue_by_id,
        );
        let action = c.action(&p, &r.action, &r.matcher, &queue_by_id, &doc.campaigns);
        rules.push(Rule {
            id: r.id.clone(),
            description: r.description.clone(),
            enabled: r.enabled,
            matcher,
            action,
        });
    }
    c.shadowed(&doc.rules);

    let default_route = match &doc.default_route {
        None => {
            c.issue("default_route", "a plan needs a default route");
            None
        }
        Some(d) => {
            c.text("default_route.note", &d.note, MAX_TEXT_LEN);
            match queue_by_id.get(&d.queue) {
                Some(&q) => Some(DefaultRoute {
                    queue: q,
                    priority: d.priority,
                    note: d.note.clone(),
                }),
                None => {
                    c.issue(
                        "default_route.queue",
                        format!("unknown queue '{}'", d.queue),
                    );
                    None
                }
            }
        }
    };

    match default_route {
        Some(default_route) if c.issues.is_empty() => {
            let index = RuleIndex::build(&rules);
            Ok(CompiledPlan {
                version,
                doc,
                queues,
                queue_by_id,
                campaigns,
                campaigns_by_dialed,
                campaigns_by_code,
                prefixes,
                longest_prefix,
                decision_counters: (0..=rules.len())
                    .map(|_| std::sync::OnceLock::new())
                    .collect(),
                rules,
                index,
                default_route,
            })
        }
        _ => Err(c.issues),
    }
}

#[derive(Default)]
struct Checker {
    issues: Vec<FieldViolation>,
}

impl Checker {
    fn issue(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(FieldViolation::new(path, message));
    }

    fn limit(&mut self, path: &str, n: usize, max: usize) {
        if n > max {
            self.issue(path, format!("has {n} entries, at most {max} allowed"));
        }
    }

    fn id(&mut self, path: &str, v: &str) -> Option<String> {
        crate::domain::check_id(path, v, &mut self.issues)
    }

    fn text(&mut self, path: &str, v: &str, max: usize) {
        crate::domain::check_text(path, v, max, &mut self.issues);
    }

    fn label(&mut self, path: &str, v: &str) -> bool {
        if v.is_empty() {
            self.issue(path, "must not be empty");
            return false;
        }
        let before = self.issues.len();
        crate::domain::check_text(path, v, MAX_LABEL_LEN, &mut self.issues);
        self.issues.len() == before
    }

    fn tz(&mut self, path: &str, v: &str) -> Option<Tz> {
        match v.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                self.issue(
                    path,
                    format!("'{v}' is not an IANA time zone (e.g. Europe/London)"),
                );
                None
            }
        }
    }

    fn instant(&mut self, path: &str, v: Option<&str>) -> Option<DateTime<Utc>> {
        let v = v?;
        match DateTime::parse_from_rfc3339(v) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.issue(path, format!("'{v}' is not an RFC 3339 instant"));
                None
            }
        }
    }

    fn clock(&mut self, path: &str, v: &str, end: bool) -> Option<ClockTime> {
        ClockTime::parse(v, end)
            .map_err(|e| self.issue(path, e))
            .ok()
    }

    /// `+` followed by 1 to 15 digits.
    fn prefix(&mut self, path: &str, v: &str) -> bool {
        let ok = v
            .strip_prefix('+')
            .is_some_and(|d| (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            self.issue(path, format!("'{v}' is not an E.164 prefix like +1212"));
        }
        ok
    }

    /// A dialed number as platforms send it: optional `+`, then 2 to 20 digits.
    fn dialed(&mut self, path: &str, v: &str) -> bool {
        let ok = crate::domain::call::is_dialed_number(v);
        if !ok {
            self.issue(
                path,
                format!("'{v}' is not a dialed number (digits, optional leading +)"),
            );
        }
        ok
    }

    fn overlap(
        &mut self,
        path: &str,
        key: &str,
        campaign: &Campaign,
        earlier: &[Campaign],
        sharing: Option<&Vec<usize>>,
    ) {
        for &j in sharing.into_iter().flatten() {
            let other = &earlier[j];
            let starts_before_other_ends = match (campaign.starts_at, other.ends_at) {
                (Some(s), Some(e)) => s < e,
                _ => true,
            };
            let other_starts_before_end = match (other.starts_at, campaign.ends_at) {
                (Some(s), Some(e)) => s < e,
                _ => true,
            };
            if starts_before_other_ends && other_starts_before_end {
                self.issue(
                    path,
                    format!(
                        "'{key}' is also used by campaign '{}' (campaigns[{j}]) in an overlapping window",
                        other.id
                    ),
                );
            }
        }
    }

    fn queue(&mut self, p: &str, q: &QueueDoc) -> Queue {
        self.text(&format!("{p}.name"), &q.name, MAX_TEXT_LEN);
        for (k, s) in q.skills.iter().enumerate() {
            self.label(&format!("{p}.skills[{k}]"), s);
        }
        let business_hours = q.business_hours.as_ref().and_then(|h| {
            let hp = format!("{p}.business_hours");
            let tz = self.tz(&format!("{hp}.time_zone"), &h.time_zone);
            let mut weekly: [Vec<(ClockTime, ClockTime)>; 7] = Default::default();
            if h.weekly.is_empty() {
                self.issue(
                    format!("{hp}.weekly"),
                    "empty business hours: the queue would never open (leave business_hours out for 24/7)",
                );
            }
            for (k, w) in h.weekly.iter().enumerate() {
                let wp = format!("{hp}.weekly[{k}]");
                let open = self.clock(&format!("{wp}.open"), &w.open, false);
                let close = self.clock(&format!("{wp}.close"), &w.close, true);
                if let (Some(o), Some(c)) = (open, close) {
                    if c <= o {
                        self.issue(format!("{wp}.close"), "must be after open");
                    }
                }
                if w.days.is_empty() {
                    self.issue(format!("{wp}.days"), "must name at least one day");
                }
                for (d, day) in w.days.iter().enumerate() {
                    match parse_weekday(day) {
                        Some(wd) => {
                            if let (Some(o), Some(c)) = (open, close) {
                                weekly[wd.num_days_from_monday() as usize].push((o, c));
                            }
                        }
                        None => self.issue(
                            format!("{wp}.days[{d}]"),
                            format!("'{day}' is not a weekday (mon..sun)"),
                        ),
                    }
                }
            }
            let mut holidays = HashSet::new();
            for (k, d) in h.holidays.iter().enumerate() {
                match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
                    Ok(d) => {
                        holidays.insert(d);
                    }
                    Err(_) => self.issue(
                        format!("{hp}.holidays[{k}]"),
                        format!("'{d}' is not a date in YYYY-MM-DD form"),
                    ),
                }
            }
            tz.map(|time_zone| BusinessHours::new(time_zone, weekly, holidays))
        });
        let sl = &q.service_level;
        if !(sl.target_percent > 0.0 && sl.target_percent <= 100.0) {
            self.issue(
                format!("{p}.service_level.target_percent"),
                "must be in (0, 100]",
            );
        }
        if sl.answer_within_secs == 0 {
            self.issue(
                format!("{p}.service_level.answer_within_secs"),
                "must be positive",
            );
        }
        if q.default_aht_secs == 0 {
            self.issue(format!("{p}.default_aht_secs"), "must be positive");
        }
        Queue {
            id: q.id.clone(),
            name: q.name.clone(),
            skills: q.skills.clone(),
            business_hours,
            service_level_target: sl.target_percent / 100.0,
            service_level_secs: sl.answer_within_secs,
            max_waiting: q.max_waiting,
            default_aht_secs: q.default_aht_secs.max(1),
            callback: self.callback(&format!("{p}.callback"), &q.callback),
            contact_uri: self.contact_uri(&format!("{p}.contact_uri"), &q.contact_uri),
        }
    }

    /// A queue's contact URI: empty, or a `sip:`, `sips:` or `tel:` URI without spaces
    /// (it is sent verbatim in a SIP Contact header).
    fn contact_uri(&mut self, p: &str, v: &str) -> String {
        if v.is_empty() {
            return String::new();
        }
        let before = self.issues.len();
        self.text(p, v, MAX_TEXT_LEN);
        if self.issues.len() != before {
            return String::new();
        }
        let lower = v.to_ascii_lowercase();
        let rest = ["sip:", "sips:", "tel:"]
            .iter()
            .find_map(|s| lower.strip_prefix(s));
        match rest {
            None => self.issue(
                p,
                format!(
                    "'{v}' must be a sip:, sips: or tel: URI (e.g. sip:general@queues.example.com)"
                ),
            ),
            Some("") => self.issue(p, "the URI has nothing after its scheme"),
            Some(_) if v.chars().any(|c| c.is_whitespace() || "<>\"".contains(c)) => {
                self.issue(p, "must not contain spaces, '<', '>' or '\"'")
            }
            Some(_) => {}
        }
        v.to_owned()
    }

    fn callback(&mut self, p: &str, cb: &CallbackPolicyDoc) -> CallbackPolicy {
        let start = self.clock(&format!("{p}.window_start"), &cb.window_start, false);
        let end = self.clock(&format!("{p}.window_end"), &cb.window_end, true);
        if let (Some(s), Some(e)) = (start, end) {
            if e <= s {
                self.issue(format!("{p}.window_end"), "must be after window_start");
            }
        }
        let dialing = match cb.dialing.as_str() {
            "agent_first" => Dialing::AgentFirst,
            "customer_first" => Dialing::CustomerFirst,
            other => {
                self.issue(
                    format!("{p}.dialing"),
                    format!("'{other}' is not agent_first or customer_first"),
                );
                Dialing::AgentFirst
            }
        };
        if !(1..=20).contains(&cb.max_attempts) {
            self.issue(format!("{p}.max_attempts"), "must be between 1 and 20");
        }
        if cb.retry_backoff_secs.is_empty() {
            self.issue(
                format!("{p}.retry_backoff_secs"),
                "must list at least one wait",
            );
        }
        for (k, b) in cb.retry_backoff_secs.iter().enumerate() {
            if *b == 0 {
                self.issue(format!("{p}.retry_backoff_secs[{k}]"), "must be positive");
            }
        }
        if cb.expiry_secs == 0 {
            self.issue(format!("{p}.expiry_secs"), "must be positive");
        }
        if !(5..=480).contains(&cb.slot_minutes) {
            self.issue(format!("{p}.slot_minutes"), "must be between 5 and 480");
        }
        if cb.slot_capacity == 0 {
            self.issue(format!("{p}.slot_capacity"), "must be positive");
        }
        CallbackPolicy {
            enabled: cb.enabled,
            offer_after_ewt_secs: cb.offer_after_ewt_secs,
            window_start: start.unwrap_or(ClockTime { minutes: 8 * 60 }),
            window_end: end.unwrap_or(ClockTime { minutes: 21 * 60 }),
            dialing,
            max_attempts: cb.max_attempts,
            retry_backoff_secs: cb.retry_backoff_secs.clone(),
            expiry_secs: cb.expiry_secs,
            slot_minutes: cb.slot_minutes,
            slot_capacity: cb.slot_capacity,
            abandon_rescue_after_secs: cb.abandon_rescue_after_secs,
        }
    }

    /// A matcher list: each value checked by `check`; `None` when the list is empty.
    fn set(
        &mut self,
        path: &str,
        values: &[String],
        mut check: impl FnMut(&mut Self, &str, &str) -> Option<String>,
    ) -> Option<HashSet<String>> {
        if values.is_empty() {
            return None;
        }
        self.limit(path, values.len(), MAX_MATCHER_VALUES);
        Some(
            values
                .iter()
                .enumerate()
                .filter_map(|(k, v)| check(self, &format!("{path}[{k}]"), v))
                .collect(),
        )
    }

    fn matcher(
        &mut self,
        p: &str,
        m: &MatchDoc,
        campaign_ids: &HashSet<String>,
        queue_by_id: &HashMap<String, usize>,
    ) -> Matcher {
        let label = |c: &mut Self, path: &str, v: &str| c.label(path, v).then(|| v.to_owned());
        Matcher {
            countries: self.set(&format!("{p}.countries"), &m.countries, |c, path, v| {
                if v.len() == 2 && v.bytes().all(|b| b.is_ascii_alphabetic()) {
                    Some(v.to_ascii_uppercase())
                } else {
                    c.issue(
                        path,
                        format!("'{v}' is not an ISO 3166-1 alpha-2 country code"),
                    );
                    None
                }
            }),
            regions: self.set(&format!("{p}.regions"), &m.regions, label),
            time_zones: self.set(&format!("{p}.time_zones"), &m.time_zones, |c, path, v| {
                c.tz(path, v).map(|tz| tz.name().to_owned())
            }),
            number_prefixes: {
                self.limit(
                    &format!("{p}.number_prefixes"),
                    m.number_prefixes.len(),
                    MAX_MATCHER_VALUES,
                );
                m.number_prefixes
                    .iter()
                    .enumerate()
                    .filter(|(k, v)| self.prefix(&format!("{p}.number_prefixes[{k}]"), v))
                    .map(|(_, v)| v.clone())
                    .collect()
            },
            customer_statuses: self.set(
                &format!("{p}.customer_statuses"),
                &m.customer_statuses,
                label,
            ),
            campaigns: self.set(&format!("{p}.campaigns"), &m.campaigns, |c, path, v| {
                if campaign_ids.contains(v) {
                    Some(v.to_owned())
                } else {
                    c.issue(path, format!("unknown campaign '{v}'"));
                    None
                }
            }),
            dialed_numbers: self.set(
                &format!("{p}.dialed_numbers"),
                &m.dialed_numbers,
                |c, path, v| c.dialed(path, v).then(|| v.to_owned()),
            ),
            intents: self.set(&format!("{p}.intents"), &m.intents, label),
            languages: {
                self.limit(
                    &format!("{p}.languages"),
                    m.languages.len(),
                    MAX_MATCHER_VALUES,
                );
                m.languages
                    .iter()
                    .enumerate()
                    .filter(|(k, v)| self.label(&format!("{p}.languages[{k}]"), v))
                    .map(|(_, v)| v.to_ascii_lowercase())
                    .collect()
            },
            business_hours_open: match m.business_hours.as_deref() {
                None => None,
                Some("open") => Some(true),
                Some("closed") => Some(false),
                Some(other) => {
                    self.issue(
                        format!("{p}.business_hours"),
                        format!("'{other}' is not open or closed"),
                    );
                    None
                }
            },
            business_hours_queue: m.business_hours_queue.as_deref().and_then(|q| {
                if m.business_hours.is_none() {
                    self.issue(
                        format!("{p}.business_hours_queue"),
                        "only means something with business_hours = \"open\" or \"closed\"",
                    );
                }
                let found = queue_by_id.get(q).copied();
                if found.is_none() {
                    self.issue(
                        format!("{p}.business_hours_queue"),
                        format!("unknown queue '{q}'"),
                    );
                }
                found
            }),
            transfer_loop: m.transfer_loop,
            expression: m.expression.as_deref().and_then(|e| {
                Expr::compile(e)
                    .map_err(|err| self.issue(format!("{p}.expression"), err))
                    .ok()
            }),
        }
    }

    fn action(
        &mut self,
        p: &str,
        a: &ActionDoc,
        m: &MatchDoc,
        queue_by_id: &HashMap<String, usize>,
        campaigns: &[CampaignDoc],
    ) -> Action {
        let ap = format!("{p}.action");
        let queue = match &a.queue {
            Some(q) => {
                let found = queue_by_id.get(q).copied();
                if found.is_none() {
                    self.issue(format!("{ap}.queue"), format!("unknown queue '{q}'"));
                }
                found
            }
            None => {
                if m.campaigns.is_empty() {
                    self.issue(
                        format!("{ap}.queue"),
                        "is required unless the rule matches campaigns (then the campaign's queue is used)",
                    );
                }
                for (k, id) in m.campaigns.iter().enumerate() {
                    if let Some(c) = campaigns.iter().find(|c| &c.id == id) {
                        if c.queue.is_none() {
                            self.issue(
                                format!("{p}.match.campaigns[{k}]"),
                                format!("campaign '{id}' has no queue and the rule names none"),
                            );
                        }
                    }
                }
                None
            }
        };
        for (k, s) in a.extra_skills.iter().enumerate() {
            self.label(&format!("{ap}.extra_skills[{k}]"), s);
        }
        self.text(&format!("{ap}.note"), &a.note, MAX_TEXT_LEN);
        let preferred_agent = match a.preferred_agent.as_deref() {
            None => None,
            Some("last_agent") => Some(PreferredAgent::LastAgent),
            Some("preferred_agent") => Some(PreferredAgent::PreferredAgent),
            Some(other) => {
                self.issue(
                    format!("{ap}.preferred_agent"),
                    format!("'{other}' is not last_agent or preferred_agent"),
                );
                None
            }
        };
        let offer_callback = match a.offer_callback.as_deref() {
            None | Some("auto") => OfferCallback::Auto,
            Some("always") => OfferCallback::Always,
            Some("never") => OfferCallback::Never,
            Some(other) => {
                self.issue(
                    format!("{ap}.offer_callback"),
                    format!("'{other}' is not auto, always or never"),
                );
                OfferCallback::Auto
            }
        };
        Action {
            queue,
            priority: a.priority,
            extra_skills: a.extra_skills.clone(),
            preferred_agent,
            preferred_agent_timeout_secs: a.preferred_agent_timeout_secs,
            offer_callback,
            note: a.note.clone(),
        }
    }

    /// Flags enabled rules that can never match because an earlier enabled rule matches
    /// every call they match. Conservative: only reports a shadow it can prove from the
    /// structured matchers (an earlier rule with an expression shadows only a rule with
    /// the same expression).
    fn shadowed(&mut self, rules: &[RuleDoc]) {
        for (j, later) in rules.iter().enumerate() {
            if !later.enabled {
                continue;
            }
            if let Some((i, earlier)) = rules[..j]
                .iter()
                .enumerate()
                .find(|(_, e)| e.enabled && covers(&e.matcher, &later.matcher, e, later))
            {
                self.issue(
                    format!("rules[{j}]"),
                    format!(
                        "unreachable: every call rule '{}' matches is taken first by rule '{}' (rules[{i}])",
                        later.id, earlier.id
                    ),
                );
            }
        }
    }
}

/// Whether every call `b` matches is also matched by `a`.
fn covers(a: &MatchDoc, b: &MatchDoc, ra: &RuleDoc, rb: &RuleDoc) -> bool {
    fn list(a: &[String], b: &[String], eq: impl Fn(&str, &str) -> bool) -> bool {
        a.is_empty() || (!b.is_empty() && b.iter().all(|x| a.iter().any(|y| eq(y, x))))
    }
    let exact = |a: &str, b: &str| a == b;
    let ci = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let prefix = |a: &str, b: &str| b.starts_with(a);
    let lang = |a: &str, b: &str| {
        super::engine::language_matches(&a.to_ascii_lowercase(), &b.to_ascii_lowercase())
    };
    // The queue whose hours each rule looks at must be the same one, named explicitly.
    let hours_queue =
        |m: &MatchDoc, r: &RuleDoc| m.business_hours_queue.clone().or(r.action.queue.clone());
    let hours = match (&a.business_hours, &b.business_hours) {
        (None, _) => true,
        (Some(x), Some(y)) => {
            x == y && hours_queue(a, ra).is_some() && hours_queue(a, ra) == hours_queue(b, rb)
        }
        (Some(_), None) => false,
    };
    let expression = match (&a.expression, &b.expression) {
        (None, _) => true,
        (Some(x), Some(y)) => x.trim() == y.trim(),
        (Some(_), None) => false,
    };
    let transfer_loop = a.transfer_loop.is_none() || a.transfer_loop == b.transfer_loop;
    hours
        && transfer_loop
        && expression
        && list(&a.countries, &b.countries, ci)
        && list(&a.regions, &b.regions, exact)
        && list(&a.time_zones, &b.time_zones, exact)
        && list(&a.number_prefixes, &b.number_prefixes, prefix)
        && list(&a.customer_statuses, &b.customer_statuses, exact)
        && list(&a.campaigns, &b.campaigns, exact)
        && list(&a.dialed_numbers, &b.dialed_numbers, exact)
        && list(&a.intents, &b.intents, exact)
        && list(&a.languages, &b.languages, lang)
}
