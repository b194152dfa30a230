//! The schema, as an ordered list of migrations embedded in the binary. At open, the
//! store applies the ones the database has not seen, all in one transaction holding an
//! advisory lock, so two nodes starting at once neither race nor see half a schema;
//! `schema_version` records what was applied. A migration is never edited once
//! released: changes come as a new entry at the end. (A dozen statements do not earn
//! a migration framework as a dependency.)
//!
//! Records are stored as JSON documents of the domain types (`doc`), next to the
//! columns that queries filter, order or constrain on. Invariants are constraints:
//! one open callback per (phone, queue) is a partial unique index, a phone number
//! belongs to one customer by primary key.

use tokio_postgres::Transaction;

/// Key of the advisory lock taken while migrating ("holdless" in ASCII).
const MIGRATION_LOCK: i64 = 0x686f_6c64_6c65_7373;

/// (version, SQL). Versions run 1, 2, 3, ... in order.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE plans (
    version bigint PRIMARY KEY,
    doc jsonb NOT NULL
);
CREATE TABLE plan_requests (
    request_id text PRIMARY KEY,
    version bigint NOT NULL,
    at timestamptz NOT NULL
);
-- Counters: 'active_plan' (0 = none), 'audit_seq' (last audit seq given out).
CREATE TABLE meta (
    key text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO meta (key, value) VALUES ('active_plan', 0), ('audit_seq', 0);
CREATE TABLE audit (
    seq bigint PRIMARY KEY,
    doc jsonb NOT NULL
);
CREATE TABLE customers (
    id text PRIMARY KEY,
    doc jsonb NOT NULL
);
CREATE TABLE customer_phones (
    phone text PRIMARY KEY,
    customer_id text NOT NULL REFERENCES customers (id) ON DELETE CASCADE
);
CREATE TABLE contacts (
    call_id text PRIMARY KEY,
    customer_id text,
    caller text,
    enqueued_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    doc jsonb NOT NULL
);
CREATE INDEX contacts_by_customer ON contacts (customer_id, enqueued_at) WHERE customer_id IS NOT NULL;
CREATE INDEX contacts_by_caller ON contacts (caller, enqueued_at) WHERE caller IS NOT NULL;
CREATE INDEX contacts_by_enqueued ON contacts (enqueued_at);
CREATE INDEX contacts_by_updated ON contacts (updated_at);
-- Interval counters are appended as deltas and summed when read: every callback
-- change counts in its interval, and one row per interval would make every writer of
-- that quarter hour queue on its lock.
CREATE TABLE kpi_deltas (
    id bigserial PRIMARY KEY,
    queue_id text NOT NULL,
    start timestamptz NOT NULL,
    counters jsonb NOT NULL
);
CREATE INDEX kpi_deltas_by_bucket ON kpi_deltas (start, queue_id);
CREATE TABLE answered_marks (
    call_id text PRIMARY KEY,
    queue_id text NOT NULL,
    bucket timestamptz NOT NULL,
    enqueued_at timestamptz NOT NULL,
    repeated boolean NOT NULL
);
CREATE TABLE survey_marks (
    call_id text PRIMARY KEY,
    at timestamptz NOT NULL
);
CREATE TABLE callbacks (
    id text PRIMARY KEY,
    phone text NOT NULL,
    queue_id text NOT NULL,
    state text NOT NULL,
    is_open boolean NOT NULL,
    version bigint NOT NULL,
    created_by text NOT NULL,
    doc jsonb NOT NULL
);
CREATE UNIQUE INDEX callbacks_one_open ON callbacks (phone, queue_id) WHERE is_open;
CREATE INDEX callbacks_open ON callbacks (id) WHERE is_open;
CREATE TABLE callback_requests (
    principal text NOT NULL,
    request_id text NOT NULL,
    callback_id text NOT NULL,
    fingerprint text NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (principal, request_id)
);
CREATE TABLE settled_attempts (
    attempt_id text PRIMARY KEY,
    callback_id text NOT NULL,
    at timestamptz NOT NULL
);
-- The cluster lease (one row): who leads, under which fencing epoch, until when.
-- Epoch 0 means no node ever took the lead.
CREATE TABLE cluster_lease (
    id integer PRIMARY KEY CHECK (id = 1),
    holder text NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz,
    advertise_addr text NOT NULL
);
INSERT INTO cluster_lease (id, holder, epoch, expires_at, advertise_addr) VALUES (1, '', 0, NULL, '');
"#,
    ),
    (
        2,
        // The scheduler's index fields as columns computed from the document on every
        // write, so a start-up or takeover reads them without the documents.
        r#"
ALTER TABLE callbacks
    ADD COLUMN priority integer
        GENERATED ALWAYS AS ((doc ->> 'priority')::integer) STORED,
    ADD COLUMN virtual_enqueued_ms bigint
        GENERATED ALWAYS AS ((doc ->> 'virtual_enqueued_at')::bigint) STORED,
    ADD COLUMN not_before_ms bigint
        GENERATED ALWAYS AS ((doc ->> 'not_before')::bigint) STORED,
    ADD COLUMN expires_ms bigint
        GENERATED ALWAYS AS ((doc ->> 'expires_at')::bigint) STORED,
    ADD COLUMN slot_start_ms bigint
        GENERATED ALWAYS AS ((doc -> 'kind' -> 'scheduled' ->> 'start')::bigint) STORED,
    ADD COLUMN attempt_id text
        GENERATED ALWAYS AS (doc -> 'lease' ->> 'attempt_id') STORED,
    ADD COLUMN lease_until_ms bigint
        GENERATED ALWAYS AS ((doc -> 'lease' ->> 'until')::bigint) STORED;
"#,
    ),
];

/// Applies the migrations the database lacks, in `tx`; returns the schema version.
pub(super) async fn migrate(tx: &Transaction<'_>) -> Result<i64, tokio_postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let row = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?;
    let mut current: i64 = row.get(0);
    for (version, sql) in MIGRATIONS {
        if *version <= current {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[version],
        )
        .await?;
        current = *version;
    }
    Ok(current)
}
