//! The export format: a stopped store's state as JSON Lines (`holdless export`), read
//! back and checked whole before anything is written (`holdless import`). The format
//! is documented in `docs/EXPORT.md`.
//!
//! One JSON object per line, each with a `kind`: first a `header` (format name and
//! version), then every `plan` version, every `customer` and every open `callback`,
//! and last an `end` line with the counts, so a truncated file is detected. The line
//! records are dedicated structs, not the stored types: renaming a field inside
//! holdless must not change the file format. Instants are UTC RFC 3339.
//!
//! What is not exported: closed callbacks, the audit log, the contact history, KPI
//! counters and idempotency keys. They are history, not state a restored server needs
//! to carry on; keep a copy of the stopped store's directory when they matter.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read, Write};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::domain::callback::{Callback, CallbackKind, CallbackState, DispatchOutcome, Lease};
use crate::domain::limits::{MAX_CUSTOMER_PHONES, MAX_LABEL_LEN, MAX_PLAN_BYTES, MAX_TEXT_LEN};
use crate::domain::{check_id, check_text, Customer, CustomerId, FieldViolation, PhoneNumber};
use crate::store::{content_hash, PlanRecord, RecordCounts, Store, StoreImport, StoreResult};

/// The `format` of the header line.
pub const FORMAT: &str = "holdless-export";
/// The format version this holdless writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Longest line read, in bytes: a plan at its size limit, JSON-escaped, with room.
pub const MAX_LINE_BYTES: usize = 3 * MAX_PLAN_BYTES;
/// Import stops after reporting this many problems.
pub const MAX_REPORTED_ISSUES: usize = 20;

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    Header(HeaderLine),
    Plan(PlanLine),
    Customer(CustomerLine),
    Callback(CallbackLine),
    End(EndLine),
}

/// `{"kind":"header","format":"holdless-export","version":1,...}`: the first line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderLine {
    pub format: String,
    pub version: u32,
    #[serde(with = "rfc3339")]
    pub exported_at: DateTime<Utc>,
    /// The holdless release that wrote the file (informational).
    #[serde(default)]
    pub holdless_version: String,
}

/// One stored plan version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLine {
    pub version: u64,
    /// Exactly one plan line is active (when there are plans).
    pub active: bool,
    pub author: String,
    pub comment: String,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Hex SHA-256 of `toml`; checked on import.
    pub content_hash: String,
    pub toml: String,
}

/// One customer record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerLine {
    pub id: String,
    pub display_name: String,
    /// E.164; a number belongs to one customer.
    pub phones: Vec<String>,
    pub status: String,
    pub language: String,
    /// IANA zone, or null.
    pub time_zone: Option<String>,
    pub last_agent_id: String,
    pub preferred_agent_id: String,
    pub notes: String,
    pub do_not_call: bool,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

/// The states an exported callback can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenState {
    Pending,
    Dispatched,
}

/// A dialer's report on an earlier attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Connected,
    NoAnswer,
    Busy,
    Voicemail,
    Failed,
    InvalidNumber,
}

/// A scheduled callback's slot `[start, end)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotLine {
    #[serde(with = "rfc3339")]
    pub start: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub end: DateTime<Utc>,
}

/// The lease of a dispatched callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseLine {
    pub attempt_id: String,
    pub dialer_id: String,
    #[serde(with = "rfc3339")]
    pub until: DateTime<Utc>,
    pub agent_id: Option<String>,
}

/// One open callback, with everything needed to carry on with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackLine {
    /// ULID.
    pub id: String,
    pub state: OpenState,
    /// Null for an ASAP callback.
    pub slot: Option<SlotLine>,
    pub phone: String,
    pub customer_id: Option<String>,
    pub queue_id: String,
    pub time_zone: String,
    pub priority: i32,
    pub attempts: u32,
    pub max_attempts: u32,
    /// Place in line.
    #[serde(with = "rfc3339")]
    pub virtual_enqueued_at: DateTime<Utc>,
    /// Due time: not dialed before it (backoff, slot start).
    #[serde(with = "rfc3339")]
    pub not_before: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub expires_at: DateTime<Utc>,
    /// Present exactly when `state` is `dispatched`.
    pub lease: Option<LeaseLine>,
    pub last_outcome: Option<Outcome>,
    pub origin_call_id: Option<String>,
    pub notes: String,
    pub ewt_at_request_secs: Option<f64>,
    pub created_by: String,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Change counter (stale writes are refused against it).
    pub version: u64,
}

/// `{"kind":"end","counts":{...}}`: the last line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndLine {
    pub counts: RecordCounts,
}

/// Instants as RFC 3339 in UTC (`Z`), with as many fraction digits as they need; any
/// offset is accepted on input.
mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("'{s}' is not RFC 3339: {e}")))
    }
}

impl PlanLine {
    pub fn new(p: &PlanRecord, active: bool) -> Self {
        Self {
            version: p.version,
            active,
            author: p.author.clone(),
            comment: p.comment.clone(),
            created_at: p.created_at,
            content_hash: p.content_hash.clone(),
            toml: p.toml.clone(),
        }
    }

    /// The stored record, if the document matches its hash and compiles.
    fn into_record(self) -> Result<PlanRecord, String> {
        if self.version == 0 {
            return Err("plan version must be at least 1".into());
        }
        if content_hash(&self.toml) != self.content_hash {
            return Err(format!(
                "plan version {}: content_hash does not match the TOML (edited or damaged)",
                self.version
            ));
        }
        if let Err(issues) = crate::routing::compile_toml(&self.toml, self.version) {
            return Err(format!(
                "plan version {} does not compile: {}",
                self.version,
                join(&issues)
            ));
        }
        Ok(PlanRecord {
            version: self.version,
            author: self.author,
            comment: self.comment,
            created_at: self.created_at,
            content_hash: self.content_hash,
            toml: self.toml,
        })
    }
}

impl From<&Customer> for CustomerLine {
    fn from(c: &Customer) -> Self {
        Self {
            id: c.id.as_str().to_owned(),
            display_name: c.display_name.clone(),
            phones: c.phones.clone(),
            status: c.status.clone(),
            language: c.language.clone(),
            time_zone: c.time_zone.map(|tz| tz.name().to_owned()),
            last_agent_id: c.last_agent_id.clone(),
            preferred_agent_id: c.preferred_agent_id.clone(),
            notes: c.notes.clone(),
            do_not_call: c.do_not_call,
            updated_at: c.updated_at,
        }
    }
}

/// A label (status, language): empty, or bounded text.
fn label(field: &str, v: &str, out: &mut Vec<FieldViolation>) {
    if !v.is_empty() {
        check_text(field, v, MAX_LABEL_LEN, out);
    }
}

/// An optional id: empty, or a valid id.
fn optional_id(field: &str, v: &str, out: &mut Vec<FieldViolation>) {
    if !v.is_empty() {
        check_id(field, v, out);
    }
}

fn zone(field: &str, v: &str, out: &mut Vec<FieldViolation>) -> Option<Tz> {
    v.parse::<Tz>()
        .map_err(|_| {
            out.push(FieldViolation::new(
                field,
                format!("'{v}' is not an IANA time zone (e.g. Europe/London)"),
            ))
        })
        .ok()
}

fn phone(field: &str, v: &str, out: &mut Vec<FieldViolation>) {
    if let Err(e) = PhoneNumber::parse(v) {
        out.push(FieldViolation::new(field, format!("'{v}' {e}")));
    }
}

fn join(v: &[FieldViolation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl CustomerLine {
    /// The customer, checked as `UpsertCustomer` checks one.
    fn into_customer(self) -> Result<Customer, String> {
        let mut v = Vec::new();
        check_id("id", &self.id, &mut v);
        if self.phones.len() > MAX_CUSTOMER_PHONES {
            v.push(FieldViolation::new(
                "phones",
                format!("at most {MAX_CUSTOMER_PHONES} numbers"),
            ));
        }
        let mut seen = HashSet::new();
        for (i, p) in self.phones.iter().enumerate() {
            phone(&format!("phones[{i}]"), p, &mut v);
            if !seen.insert(p) {
                v.push(FieldViolation::new(
                    format!("phones[{i}]"),
                    format!("{p} is listed twice"),
                ));
            }
        }
        check_text(
            "display_name",
            &self.display_name,
            MAX_LABEL_LEN * 4,
            &mut v,
        );
        label("status", &self.status, &mut v);
        label("language", &self.language, &mut v);
        let time_zone = match self.time_zone.as_deref() {
            None | Some("") => None,
            Some(tz) => zone("time_zone", tz, &mut v),
        };
        optional_id("last_agent_id", &self.last_agent_id, &mut v);
        optional_id("preferred_agent_id", &self.preferred_agent_id, &mut v);
        check_text("notes", &self.notes, MAX_TEXT_LEN, &mut v);
        if !v.is_empty() {
            return Err(format!("customer {}: {}", self.id, join(&v)));
        }
        Ok(Customer {
            id: CustomerId::new_checked(self.id),
            display_name: self.display_name,
            phones: self.phones,
            status: self.status,
            language: self.language,
            time_zone,
            last_agent_id: self.last_agent_id,
            preferred_agent_id: self.preferred_agent_id,
            notes: self.notes,
            do_not_call: self.do_not_call,
            updated_at: self.updated_at,
        })
    }
}

impl TryFrom<&Callback> for CallbackLine {
    type Error = String;

    /// Only open callbacks have a line.
    fn try_from(c: &Callback) -> Result<Self, String> {
        let state = match c.state {
            CallbackState::Pending => OpenState::Pending,
            CallbackState::Dispatched => OpenState::Dispatched,
            CallbackState::Completed
            | CallbackState::Failed
            | CallbackState::Cancelled
            | CallbackState::Expired => {
                return Err(format!("callback {} is {:?}, not open", c.id, c.state))
            }
        };
        let slot = match &c.kind {
            CallbackKind::Asap => None,
            CallbackKind::Scheduled { start, end } => Some(SlotLine {
                start: *start,
                end: *end,
            }),
        };
        Ok(Self {
            id: c.id.clone(),
            state,
            slot,
            phone: c.phone.clone(),
            customer_id: c.customer_id.clone(),
            queue_id: c.queue_id.clone(),
            time_zone: c.time_zone.clone(),
            priority: c.priority,
            attempts: c.attempts,
            max_attempts: c.max_attempts,
            virtual_enqueued_at: c.virtual_enqueued_at,
            not_before: c.not_before,
            expires_at: c.expires_at,
            lease: c.lease.as_ref().map(|l| LeaseLine {
                attempt_id: l.attempt_id.clone(),
                dialer_id: l.dialer_id.clone(),
                until: l.until,
                agent_id: l.agent_id.clone(),
            }),
            last_outcome: c.last_outcome.map(|o| match o {
                DispatchOutcome::Connected => Outcome::Connected,
                DispatchOutcome::NoAnswer => Outcome::NoAnswer,
                DispatchOutcome::Busy => Outcome::Busy,
                DispatchOutcome::Voicemail => Outcome::Voicemail,
                DispatchOutcome::Failed => Outcome::Failed,
                DispatchOutcome::InvalidNumber => Outcome::InvalidNumber,
            }),
            origin_call_id: c.origin_call_id.clone(),
            notes: c.notes.clone(),
            ewt_at_request_secs: c.ewt_at_request_secs,
            created_by: c.created_by.clone(),
            created_at: c.created_at,
            updated_at: c.updated_at,
            version: c.version,
        })
    }
}

impl CallbackLine {
    /// The callback, with the checks the store's indexes and the scheduler rely on.
    fn into_callback(self) -> Result<Callback, String> {
        let mut v = Vec::new();
        match ulid::Ulid::from_string(&self.id) {
            Ok(u) if u.to_string() == self.id => {}
            _ => v.push(FieldViolation::new(
                "id",
                "must be a ULID in canonical form",
            )),
        }
        phone("phone", &self.phone, &mut v);
        check_id("queue_id", &self.queue_id, &mut v);
        if let Some(c) = &self.customer_id {
            check_id("customer_id", c, &mut v);
        }
        zone("time_zone", &self.time_zone, &mut v);
        if let Some(id) = &self.origin_call_id {
            check_id("origin_call_id", id, &mut v);
        }
        check_text("notes", &self.notes, MAX_TEXT_LEN, &mut v);
        check_text("created_by", &self.created_by, MAX_TEXT_LEN, &mut v);
        if let Some(slot) = &self.slot {
            if slot.start >= slot.end {
                v.push(FieldViolation::new("slot", "start must be before end"));
            }
        }
        if self
            .ewt_at_request_secs
            .is_some_and(|s| !s.is_finite() || s < 0.0)
        {
            v.push(FieldViolation::new(
                "ewt_at_request_secs",
                "must be a non-negative number of seconds",
            ));
        }
        if self.version == 0 {
            v.push(FieldViolation::new("version", "must be at least 1"));
        }
        match (self.state, &self.lease) {
            (OpenState::Pending, None) => {}
            (OpenState::Pending, Some(_)) => v.push(FieldViolation::new(
                "lease",
                "a pending callback has no lease",
            )),
            (OpenState::Dispatched, None) => v.push(FieldViolation::new(
                "lease",
                "a dispatched callback needs its lease",
            )),
            (OpenState::Dispatched, Some(l)) => {
                if l.attempt_id.is_empty() {
                    v.push(FieldViolation::new("lease.attempt_id", "is required"));
                }
                check_text("lease.attempt_id", &l.attempt_id, MAX_TEXT_LEN, &mut v);
                check_text("lease.dialer_id", &l.dialer_id, MAX_TEXT_LEN, &mut v);
                if let Some(a) = &l.agent_id {
                    check_id("lease.agent_id", a, &mut v);
                }
                if self.attempts == 0 {
                    v.push(FieldViolation::new(
                        "attempts",
                        "a dispatched callback has made at least one attempt",
                    ));
                }
            }
        }
        if !v.is_empty() {
            return Err(format!("callback {}: {}", self.id, join(&v)));
        }
        Ok(Callback {
            id: self.id,
            state: match self.state {
                OpenState::Pending => CallbackState::Pending,
                OpenState::Dispatched => CallbackState::Dispatched,
            },
            kind: match self.slot {
                None => CallbackKind::Asap,
                Some(s) => CallbackKind::Scheduled {
                    start: s.start,
                    end: s.end,
                },
            },
            phone: self.phone,
            customer_id: self.customer_id,
            queue_id: self.queue_id,
            time_zone: self.time_zone,
            virtual_enqueued_at: self.virtual_enqueued_at,
            priority: self.priority,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            not_before: self.not_before,
            expires_at: self.expires_at,
            lease: self.lease.map(|l| Lease {
                attempt_id: l.attempt_id,
                dialer_id: l.dialer_id,
                until: l.until,
                agent_id: l.agent_id,
            }),
            last_outcome: self.last_outcome.map(|o| match o {
                Outcome::Connected => DispatchOutcome::Connected,
                Outcome::NoAnswer => DispatchOutcome::NoAnswer,
                Outcome::Busy => DispatchOutcome::Busy,
                Outcome::Voicemail => DispatchOutcome::Voicemail,
                Outcome::Failed => DispatchOutcome::Failed,
                Outcome::InvalidNumber => DispatchOutcome::InvalidNumber,
            }),
            cancel_reason: None,
            origin_call_id: self.origin_call_id,
            notes: self.notes,
            ewt_at_request_secs: self.ewt_at_request_secs,
            created_by: self.created_by,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
        })
    }
}

/// Reads the state to export from a store nobody else is writing to.
pub async fn snapshot(store: &dyn Store) -> StoreResult<StoreImport> {
    let plans = store.all_plans().await?;
    let active_version = store.active_plan().await?.map(|p| p.version);
    let customers = store.all_customers().await?;
    let mut callbacks = store.open_callbacks().await?;
    callbacks.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(StoreImport {
        plans,
        active_version,
        customers,
        callbacks,
    })
}

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{0}")]
    NotExportable(String),
}

/// Writes `data` as an export file: header, plans (oldest first), customers,
/// callbacks, end line. Returns the counts written.
pub fn write(
    out: &mut impl Write,
    exported_at: DateTime<Utc>,
    data: &StoreImport,
) -> Result<RecordCounts, WriteError> {
    fn line(l: &Line, out: &mut impl Write) -> Result<(), WriteError> {
        serde_json::to_writer(&mut *out, l)?;
        out.write_all(b"\n")?;
        Ok(())
    }
    line(
        &Line::Header(HeaderLine {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            exported_at,
            holdless_version: env!("CARGO_PKG_VERSION").into(),
        }),
        out,
    )?;
    for p in &data.plans {
        let active = data.active_version == Some(p.version);
        line(&Line::Plan(PlanLine::new(p, active)), out)?;
    }
    for c in &data.customers {
        line(&Line::Customer(CustomerLine::from(c)), out)?;
    }
    for c in &data.callbacks {
        let l = CallbackLine::try_from(c).map_err(WriteError::NotExportable)?;
        line(&Line::Callback(l), out)?;
    }
    let counts = data.counts();
    line(&Line::End(EndLine { counts }), out)?;
    out.flush()?;
    Ok(counts)
}

/// A problem found in an export file; `line` is 1-based (`None`: the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(n) => write!(f, "line {n}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Collects issues up to [`MAX_REPORTED_ISSUES`].
struct Issues(Vec<Issue>);

impl Issues {
    fn add(&mut self, line: Option<usize>, message: impl Into<String>) {
        if self.0.len() < MAX_REPORTED_ISSUES {
            self.0.push(Issue {
                line,
                message: message.into(),
            });
        }
    }
    fn full(&self) -> bool {
        self.0.len() >= MAX_REPORTED_ISSUES
    }
}

/// Reads and checks a whole export file: every line parses, the header comes first
/// and names this format and version, the end line comes last and its counts match,
/// every record is valid (phone numbers, ids, time zones, plans that compile and
/// match their hash), and versions, ids, customer numbers and open (phone, queue)
/// pairs are unique with exactly one active plan. Returns every record, or the
/// problems found (at most [`MAX_REPORTED_ISSUES`], each naming its line).
pub fn read(input: impl BufRead) -> Result<StoreImport, Vec<Issue>> {
    let mut callbacks = Vec::new();
    let mut data = read_with(input, &mut |c| callbacks.push(c))?;
    data.callbacks = callbacks;
    Ok(data)
}

/// [`read`] without holding the callbacks: each valid callback goes to `sink` as its
/// line is read, and the records returned have none. The checks are the same, so a
/// file of a million callbacks is checked in the memory its ids and (phone, queue)
/// pairs take (under 200 MB), not its records'. `sink` also sees the callbacks of a file
/// that turns out to be bad: only an `Ok` means every one it was given is valid.
pub fn read_with(
    input: impl BufRead,
    sink: &mut dyn FnMut(Callback),
) -> Result<StoreImport, Vec<Issue>> {
    read_checked(input, sink, true)
}

/// The second read of a file [`read_with`] accepted, to write it: the same checks but
/// one, that callback ids and open (phone, queue) pairs are unique across the file.
/// That one takes memory in proportion to the callbacks, and the store checks it
/// again as it writes them (against what it already holds).
pub fn read_again(
    input: impl BufRead,
    sink: &mut dyn FnMut(Callback),
) -> Result<StoreImport, Vec<Issue>> {
    read_checked(input, sink, false)
}

fn read_checked(
    input: impl BufRead,
    sink: &mut dyn FnMut(Callback),
    unique_callbacks: bool,
) -> Result<StoreImport, Vec<Issue>> {
    let mut input = input;
    let mut issues = Issues(Vec::new());
    let mut data = StoreImport::default();
    let mut seen = RecordCounts::default();
    let mut end: Option<(usize, RecordCounts)> = None;
    let mut header = false;
    let mut active_line: Option<usize> = None;
    let mut versions: HashMap<u64, usize> = HashMap::new();
    let mut customer_ids: HashMap<String, usize> = HashMap::new();
    let mut phones: HashMap<String, usize> = HashMap::new();
    // Compact keys: a million callbacks are checked in ~100 MB. An id is a valid
    // ULID by the time it is remembered, so its 128 bits are the id.
    let mut callback_ids: HashMap<u128, usize> = HashMap::new();
    // Phone, 0x00, queue.
    let mut open: HashMap<String, usize> = HashMap::new();
    let mut buf = Vec::new();
    let mut n = 0usize;
    while !issues.full() {
        buf.clear();
        let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1;
        match input.by_ref().take(limit).read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                issues.add(Some(n + 1), format!("cannot read: {e}"));
                break;
            }
        }
        n += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        } else if buf.len() > MAX_LINE_BYTES {
            issues.add(
                Some(n),
                format!("line is longer than {MAX_LINE_BYTES} bytes"),
            );
            break;
        }
        let at = Some(n);
        if let Some((end_line, _)) = end {
            issues.add(at, format!("text after the end line (line {end_line})"));
            break;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            issues.add(at, "empty line");
            if n == 1 {
                break;
            }
            continue;
        }
        let line = match serde_json::from_slice::<Line>(&buf) {
            Ok(l) => l,
            Err(e) => {
                issues.add(at, format!("not a valid export record: {e}"));
                if n == 1 {
                    break;
                }
                continue;
            }
        };
        if !header {
            match line {
                Line::Header(h) => {
                    if h.format != FORMAT {
                        issues.add(at, format!("format is '{}', not '{FORMAT}'", h.format));
                        break;
                    }
                    if h.version != FORMAT_VERSION {
                        issues.add(
                            at,
                            format!(
                                "format version {} is not supported (this holdless reads version {FORMAT_VERSION})",
                                h.version
                            ),
                        );
                        break;
                    }
                    header = true;
                    continue;
                }
                _ => {
                    issues.add(at, "the first line must be the header");
                    break;
                }
            }
        }
        match line {
            Line::Header(_) => issues.add(at, "a second header"),
            Line::End(e) => end = Some((n, e.counts)),
            Line::Plan(p) => {
                seen.plans += 1;
                let active = p.active;
                match p.into_record() {
                    Err(m) => issues.add(at, m),
                    Ok(r) => {
                        if let Some(first) = versions.insert(r.version, n) {
                            issues.add(
                                at,
                                format!("plan version {} is also on line {first}", r.version),
                            );
                        }
                        if active {
                            match active_line {
                                Some(first) => issues.add(
                                    at,
                                    format!("a second active plan (the first is on line {first})"),
                                ),
                                None => {
                                    active_line = Some(n);
                                    data.active_version = Some(r.version);
                                }
                            }
                        }
                        data.plans.push(r);
                    }
                }
            }
            Line::Customer(c) => {
                seen.customers += 1;
                match c.into_customer() {
                    Err(m) => issues.add(at, m),
                    Ok(c) => {
                        if let Some(first) = customer_ids.insert(c.id.as_str().to_owned(), n) {
                            issues.add(
                                at,
                                format!("customer {} is also on line {first}", c.id.as_str()),
                            );
                        }
                        for p in &c.phones {
                            if let Some(first) = phones.insert(p.clone(), n) {
                                issues.add(
                                    at,
                                    format!(
                                        "phone number {p} also belongs to the customer on line {first}"
                                    ),
                                );
                            }
                        }
                        data.customers.push(c);
                    }
                }
            }
            Line::Callback(c) => {
                seen.callbacks += 1;
                match c.into_callback() {
                    Err(m) => issues.add(at, m),
                    Ok(c) => {
                        if unique_callbacks {
                            let id = ulid::Ulid::from_string(&c.id).map_or(0, u128::from);
                            if let Some(first) = callback_ids.insert(id, n) {
                                issues
                                    .add(at, format!("callback {} is also on line {first}", c.id));
                            }
                            let key = format!("{}\0{}", c.phone, c.queue_id);
                            if let Some(first) = open.insert(key, n) {
                                issues.add(
                                    at,
                                    format!(
                                        "a second open callback for {} in queue {} (the first is on line {first})",
                                        c.phone, c.queue_id
                                    ),
                                );
                            }
                        }
                        sink(c);
                    }
                }
            }
        }
    }
    if !issues.full() {
        if n == 0 {
            issues.add(None, "the file is empty");
        } else if header {
            match end {
                None => issues.add(
                    None,
                    format!("the file ends after line {n} without its end line (truncated?)"),
                ),
                Some((line, counts)) if counts != seen => issues.add(
                    Some(line),
                    format!(
                        "the end line counts plans={} customers={} callbacks={}, the file holds plans={} customers={} callbacks={}",
                        counts.plans,
                        counts.customers,
                        counts.callbacks,
                        seen.plans,
                        seen.customers,
                        seen.callbacks
                    ),
                ),
                Some(_) => {}
            }
            if !data.plans.is_empty() && active_line.is_none() && issues.0.is_empty() {
                issues.add(None, "no plan line is active");
            }
        }
    }
    if issues.0.is_empty() {
        // What the lines cannot show one by one (plan versions without gaps).
        if let Err(e) = data.check() {
            issues.add(None, e.to_string());
        }
    }
    if !issues.0.is_empty() {
        return Err(issues.0);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::EXAMPLE_PLAN;
    use serde_json::{json, Value};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_790_000_000 + s, 123_000_000).expect("valid instant")
    }

    fn plan(version: u64, toml: &str) -> PlanRecord {
        PlanRecord {
            version,
            author: "ops".into(),
            comment: format!("version {version}"),
            created_at: t(i64::try_from(version).unwrap_or(0)),
            content_hash: content_hash(toml),
            toml: toml.into(),
        }
    }

    fn callback(id: &str, phone: &str) -> Callback {
        Callback {
            id: id.into(),
            state: CallbackState::Pending,
            kind: CallbackKind::Asap,
            phone: phone.into(),
            customer_id: Some("cust-1".into()),
            queue_id: "general".into(),
            time_zone: "Europe/London".into(),
            virtual_enqueued_at: t(10),
            priority: 5,
            attempts: 0,
            max_attempts: 3,
            not_before: t(10),
            expires_at: t(86_400),
            lease: None,
            last_outcome: None,
            cancel_reason: None,
            origin_call_id: Some("call-9".into()),
            notes: "asked about billing".into(),
            ewt_at_request_secs: Some(240.0),
            created_by: "web".into(),
            created_at: t(11),
            updated_at: t(12),
            version: 1,
        }
    }

    fn sample() -> StoreImport {
        let mut dispatched = callback("01J0000000000000000000000B", "+12125550101");
        dispatched.state = CallbackState::Dispatched;
        dispatched.kind = CallbackKind::Scheduled {
            start: t(3_600),
            end: t(5_400),
        };
        dispatched.attempts = 2;
        dispatched.last_outcome = Some(DispatchOutcome::NoAnswer);
        dispatched.lease = Some(Lease {
            attempt_id: "att-2".into(),
            dialer_id: "dialer-1".into(),
            until: t(3_700),
            agent_id: Some("agent-7".into()),
        });
        dispatched.version = 4;
        StoreImport {
            plans: vec![
                plan(1, EXAMPLE_PLAN),
                plan(2, &format!("{EXAMPLE_PLAN}\n# v2\n")),
            ],
            active_version: Some(2),
            customers: vec![Customer {
                id: CustomerId::new_checked("cust-1".into()),
                display_name: "Ada Lovelace".into(),
                phones: vec!["+442079460958".into(), "+442079460959".into()],
                status: "gold".into(),
                language: "en-GB".into(),
                time_zone: Some(chrono_tz::Europe::London),
                last_agent_id: "agent-7".into(),
                preferred_agent_id: String::new(),
                notes: "Prefers mornings.\nCall back on the mobile.".into(),
                do_not_call: false,
                updated_at: DateTime::<Utc>::from_timestamp(1_790_000_000, 123_456_789)
                    .expect("valid instant"),
            }],
            callbacks: vec![
                callback("01J0000000000000000000000A", "+12125550100"),
                dispatched,
            ],
        }
    }

    fn lines(data: &StoreImport) -> Vec<String> {
        let mut out = Vec::new();
        write(&mut out, t(0), data).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn parse(lines: &[String]) -> Result<StoreImport, Vec<Issue>> {
        let mut text = lines.join("\n");
        text.push('\n');
        read(text.as_bytes())
    }

    /// The issues of a file that must be refused, as text.
    fn refused(lines: &[String]) -> Vec<String> {
        match parse(lines) {
            Ok(_) => panic!("accepted a bad file: {lines:#?}"),
            Err(issues) => issues.iter().map(ToString::to_string).collect(),
        }
    }

    /// Applies `f` to line `i` (0-based) as JSON.
    fn edit(lines: &mut [String], i: usize, f: impl FnOnce(&mut Value)) {
        let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
        f(&mut v);
        lines[i] = v.to_string();
    }

    #[test]
    fn a_written_file_reads_back_to_the_same_records() {
        let data = sample();
        assert_eq!(parse(&lines(&data)), Ok(data));
    }

    #[test]
    fn lines_run_header_plans_customers_callbacks_end() {
        let lines = lines(&sample());
        let kinds: Vec<String> = lines
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["kind"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            ["header", "plan", "plan", "customer", "callback", "callback", "end"]
        );
        let header: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(header["format"], "holdless-export");
        assert_eq!(header["version"], 1);
        assert_eq!(header["exported_at"], "2026-09-21T14:13:20.123Z");
        let active: Vec<bool> = lines[1..3]
            .iter()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["active"]
                    .as_bool()
                    .unwrap()
            })
            .collect();
        assert_eq!(active, [false, true]);
        let end: Value = serde_json::from_str(&lines[6]).unwrap();
        assert_eq!(
            end["counts"],
            json!({"plans": 2, "customers": 1, "callbacks": 2})
        );
        let cb: Value = serde_json::from_str(&lines[5]).unwrap();
        assert_eq!(cb["state"], "dispatched");
        assert_eq!(cb["slot"]["start"], "2026-09-21T15:13:20.123Z");
        assert_eq!(cb["lease"]["attempt_id"], "att-2");
        assert_eq!(cb["last_outcome"], "no_answer");
    }

    #[test]
    fn a_closed_callback_is_not_exportable() {
        let mut data = sample();
        data.callbacks[0].state = CallbackState::Cancelled;
        assert!(matches!(
            write(&mut Vec::new(), t(0), &data),
            Err(WriteError::NotExportable(_))
        ));
    }

    #[test]
    fn a_file_without_its_end_line_is_truncated() {
        let mut l = lines(&sample());
        l.pop();
        assert_eq!(
            refused(&l),
            ["the file ends after line 6 without its end line (truncated?)"]
        );
        // Cut in the middle of a line: that line is named too.
        let mut l = lines(&sample());
        l.truncate(4);
        let half = l[3].len() / 2;
        l[3].truncate(half);
        let issues = refused(&l);
        assert!(
            issues[0].starts_with("line 4: not a valid export record"),
            "{issues:?}"
        );
        assert!(issues[1].contains("without its end line"), "{issues:?}");
    }

    #[test]
    fn end_counts_must_match_the_lines() {
        let mut l = lines(&sample());
        edit(&mut l, 6, |v| v["counts"]["callbacks"] = json!(3));
        let issues = refused(&l);
        assert_eq!(issues.len(), 1);
        assert!(
            issues[0].starts_with("line 7: the end line counts"),
            "{issues:?}"
        );
        assert!(issues[0].contains("callbacks=3") && issues[0].contains("callbacks=2"));
    }

    #[test]
    fn bad_json_and_unknown_kinds_name_their_line() {
        let mut l = lines(&sample());
        l[3] = "{not json".into();
        let issues = refused(&l);
        assert!(
            issues[0].starts_with("line 4: not a valid export record"),
            "{issues:?}"
        );
        let mut l = lines(&sample());
        l.insert(4, r#"{"kind":"agent","id":"a1"}"#.into());
        let issues = refused(&l);
        assert!(
            issues[0].starts_with("line 5:") && issues[0].contains("unknown variant `agent`"),
            "{issues:?}"
        );
        let mut l = lines(&sample());
        edit(&mut l, 3, |v| v["shoe_size"] = json!(44));
        assert!(refused(&l)[0].contains("unknown field `shoe_size`"));
    }

    #[test]
    fn invalid_records_are_refused_with_their_line_and_field() {
        let mut l = lines(&sample());
        edit(&mut l, 4, |v| v["phone"] = json!("0207 946 0958"));
        let issues = refused(&l);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(issues[0].starts_with("line 5: callback 01J"), "{issues:?}");
        assert!(
            issues[0].contains("phone: '0207 946 0958' must be E.164"),
            "{issues:?}"
        );

        let mut l = lines(&sample());
        edit(&mut l, 3, |v| v["phones"][1] = json!("+44abc"));
        assert!(refused(&l)[0].starts_with("line 4: customer cust-1: phones[1]"));

        let mut l = lines(&sample());
        edit(&mut l, 3, |v| v["time_zone"] = json!("Mars/Olympus"));
        assert!(refused(&l)[0].contains("not an IANA time zone"));

        let mut l = lines(&sample());
        edit(&mut l, 5, |v| v["lease"] = Value::Null);
        assert!(refused(&l)[0].contains("a dispatched callback needs its lease"));

        let mut l = lines(&sample());
        edit(&mut l, 4, |v| v["id"] = json!("cb-1"));
        assert!(refused(&l)[0].contains("id: must be a ULID"));

        let mut l = lines(&sample());
        edit(&mut l, 4, |v| v["created_at"] = json!("yesterday"));
        assert!(refused(&l)[0].contains("'yesterday' is not RFC 3339"));
    }

    #[test]
    fn plans_must_compile_and_match_their_hash() {
        let mut l = lines(&sample());
        let bad = "[[queues]]\nid = \"a\"\n[default_route]\nqueue = \"b\"\n";
        edit(&mut l, 1, |v| {
            v["toml"] = json!(bad);
            v["content_hash"] = json!(content_hash(bad));
        });
        let issues = refused(&l);
        assert!(
            issues[0].starts_with("line 2: plan version 1 does not compile")
                && issues[0].contains("unknown queue 'b'"),
            "{issues:?}"
        );
        let mut l = lines(&sample());
        edit(&mut l, 2, |v| v["toml"] = json!(EXAMPLE_PLAN));
        assert!(refused(&l)[0].starts_with("line 3: plan version 2: content_hash does not match"));
    }

    #[test]
    fn the_header_comes_first_with_a_known_version() {
        let mut l = lines(&sample());
        l.remove(0);
        assert_eq!(refused(&l), ["line 1: the first line must be the header"]);
        let mut l = lines(&sample());
        edit(&mut l, 0, |v| v["version"] = json!(2));
        assert!(refused(&l)[0].contains("format version 2 is not supported"));
        let mut l = lines(&sample());
        edit(&mut l, 0, |v| v["format"] = json!("something-else"));
        assert!(refused(&l)[0].contains("format is 'something-else'"));
        let empty: &[u8] = b"";
        assert_eq!(read(empty).unwrap_err()[0].to_string(), "the file is empty");
        assert_eq!(refused(&[]), ["line 1: empty line"]);
    }

    #[test]
    fn nothing_may_follow_the_end_line() {
        let mut l = lines(&sample());
        l.push(l[4].clone());
        assert_eq!(refused(&l), ["line 8: text after the end line (line 7)"]);
    }

    #[test]
    fn duplicates_and_active_plans_are_checked_across_lines() {
        let mut l = lines(&sample());
        edit(&mut l, 1, |v| v["active"] = json!(true));
        assert_eq!(
            refused(&l),
            ["line 3: a second active plan (the first is on line 2)"]
        );
        let mut l = lines(&sample());
        edit(&mut l, 2, |v| v["active"] = json!(false));
        assert_eq!(refused(&l), ["no plan line is active"]);
        let mut l = lines(&sample());
        edit(&mut l, 5, |v| {
            v["phone"] = json!("+12125550100");
            v["slot"] = Value::Null;
        });
        let issues = refused(&l);
        assert!(
            issues[0]
                .starts_with("line 6: a second open callback for +12125550100 in queue general"),
            "{issues:?}"
        );
        let mut l = lines(&sample());
        let twin = l[3].clone();
        l.insert(4, twin);
        edit(&mut l, 7, |v| v["counts"]["customers"] = json!(2));
        let issues = refused(&l);
        assert!(
            issues[0].starts_with("line 5: customer cust-1 is also on line 4"),
            "{issues:?}"
        );
    }

    #[test]
    fn the_documented_examples_make_a_valid_file() {
        let doc = include_str!("../docs/EXPORT.md");
        // Each ```json block is one line, wrapped for reading.
        let lines: Vec<String> = doc
            .split("```json\n")
            .skip(1)
            .map(|block| {
                let block = block.split("```").next().unwrap_or_default();
                block.lines().map(str::trim).collect::<String>()
            })
            .collect();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        let data = parse(&lines).unwrap_or_else(|e| panic!("{e:#?}"));
        assert_eq!(
            data.counts(),
            RecordCounts {
                plans: 1,
                customers: 1,
                callbacks: 1
            }
        );
        assert_eq!(data.callbacks[0].state, CallbackState::Dispatched);
    }

    #[test]
    fn an_empty_store_exports_and_imports() {
        let data = StoreImport::default();
        let l = lines(&data);
        assert_eq!(l.len(), 2);
        assert_eq!(parse(&l), Ok(data));
    }

    #[test]
    fn overlong_lines_stop_the_read() {
        let mut text = lines(&sample())[0].clone();
        text.push('\n');
        text.push_str(&"x".repeat(MAX_LINE_BYTES + 10));
        let issues = read(text.as_bytes()).unwrap_err();
        assert_eq!(
            issues[0].to_string(),
            format!("line 2: line is longer than {MAX_LINE_BYTES} bytes")
        );
    }
}
