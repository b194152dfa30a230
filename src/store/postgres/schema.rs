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
pub(super) const MIGRATION_LOCK: i64 = 0x686f_6c64_6c65_7373;

/// (version, SQL), in increasing versions, applied in this order (see [`migrate_with`]).
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
    (3, CALLBACK_FUNCTIONS),
    (4, WARM_IMAGE),
];

/// Migration 4: the scheduler's warm-start image (`Store::save_warm_image`), kept in
/// parts of at most `warm::PART` bytes (`part` 0, 1, ...), uncompressed (it is
/// read and written whole, and compressing 80 MB would cost more than it saves).
/// Any statement that writes `callbacks` (insert, update, delete, truncate), from
/// holdless of any release or from anyone else, deletes it in the same transaction:
/// an image that is there is what the callbacks are. The trigger costs about 5 us per
/// statement (measured on the 2-core test machine: 200,000 single-row updates took
/// 1.0 s longer with it).
const WARM_IMAGE: &str = r#"
CREATE TABLE warm_image (
    part integer PRIMARY KEY,
    body bytea NOT NULL
);
ALTER TABLE warm_image ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE FUNCTION holdless_drop_warm_image() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM warm_image;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER callbacks_drop_warm_image
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON callbacks
    FOR EACH STATEMENT EXECUTE FUNCTION holdless_drop_warm_image();
"#;

/// Migration 3: callback creates and a callback change each as one function, called
/// in one autocommitted statement (one round trip instead of BEGIN, the fence check,
/// the statements and COMMIT; see `store::postgres::callbacks`). Both run under READ
/// COMMITTED, where each statement inside a function sees what committed before it.
///
/// `holdless_create_callbacks`: several creates in one transaction (one commit).
/// Parameters are arrays of the same length, one element per callback (`p_epoch` is
/// the fence, 0: none). The fence is checked once; a fenced call answers one `fenced`
/// row (`lease_epoch` the lease's). Otherwise one row per callback, in the order
/// given, each create seeing the ones before it (a twin later in the same call finds
/// the first): its request key (`p_request_ids[i]` NULL: none), then the dedupe, the
/// insert, the key remembered, and its KPI delta when it was created (the deltas
/// inserted together at the end). Outcomes: `reused` (the key came with another
/// body), `replayed` and `existing` (`answer` the callback), `lost` (the key names a
/// callback that is gone; `answer` its id), `created`. A twin created concurrently
/// makes the insert do nothing (the one-open index is its arbiter) and the next look
/// find it; a concurrent use of the same key fails on `callback_requests`' primary
/// key, and the caller runs the statement again, which then finds the key.
///
/// `holdless_update_callback`: the fence, then the row locked and its version checked
/// (`stale` unless it is `p_version - 1`), the change, the settled attempt
/// (`p_attempt` NULL: none) and the KPI delta of closing it (`p_kpi`, counted only
/// when the stored callback was open). Outcomes: `fenced`, `stale`, `updated`
/// (`old_state` the state it had).
const CALLBACK_FUNCTIONS: &str = r#"
CREATE FUNCTION holdless_create_callbacks(
    p_epoch bigint, p_ids text[], p_phones text[], p_queues text[], p_states text[],
    p_open boolean[], p_versions bigint[], p_created_by text[], p_docs jsonb[],
    p_principals text[], p_request_ids text[], p_fingerprints text[], p_at timestamptz[],
    p_kpi_starts timestamptz[], p_kpis jsonb[])
RETURNS TABLE (outcome text, answer jsonb, lease_epoch bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_epoch bigint;
    v_fingerprint text;
    v_named text;
    v_id text;
    v_counted integer[] := '{}';
BEGIN
    IF p_epoch <> 0 THEN
        SELECT l.epoch INTO v_epoch FROM cluster_lease l WHERE l.id = 1 FOR KEY SHARE;
        IF v_epoch IS DISTINCT FROM p_epoch THEN
            outcome := 'fenced';
            lease_epoch := v_epoch;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    FOR i IN 1..coalesce(array_length(p_ids, 1), 0) LOOP
        outcome := NULL;
        answer := NULL;
        IF p_request_ids[i] IS NOT NULL THEN
            SELECT r.callback_id, r.fingerprint INTO v_named, v_fingerprint
              FROM callback_requests r
             WHERE r.principal = p_principals[i] AND r.request_id = p_request_ids[i];
            IF FOUND THEN
                IF v_fingerprint <> p_fingerprints[i] THEN
                    outcome := 'reused';
                ELSE
                    SELECT c.doc INTO answer FROM callbacks c WHERE c.id = v_named;
                    IF FOUND THEN
                        outcome := 'replayed';
                    ELSE
                        outcome := 'lost';
                        answer := to_jsonb(v_named);
                    END IF;
                END IF;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        -- Each pass either finds the open twin, or inserts, or meets a twin that
        -- committed after the look (and finds it on the next pass); a twin that keeps
        -- closing and reopening ends the loop, and the caller runs the statement again.
        FOR n IN 1..8 LOOP
            SELECT c.id, c.doc INTO v_id, answer FROM callbacks c
             WHERE c.phone = p_phones[i] AND c.queue_id = p_queues[i] AND c.is_open;
            IF FOUND THEN
                outcome := 'existing';
                EXIT;
            END IF;
            INSERT INTO callbacks AS c
                (id, phone, queue_id, state, is_open, version, created_by, doc)
            VALUES (p_ids[i], p_phones[i], p_queues[i], p_states[i], p_open[i],
                    p_versions[i], p_created_by[i], p_docs[i])
            ON CONFLICT (phone, queue_id) WHERE is_open DO NOTHING
            RETURNING c.id INTO v_id;
            IF FOUND THEN
                outcome := 'created';
                answer := NULL;
                EXIT;
            END IF;
        END LOOP;
        IF outcome IS NULL THEN
            RAISE EXCEPTION 'the open callback of % in % kept changing', p_phones[i], p_queues[i]
                USING ERRCODE = 'serialization_failure';
        END IF;
        IF outcome = 'created' AND p_kpis[i] IS NOT NULL THEN
            v_counted := v_counted || i;
        END IF;
        IF p_request_ids[i] IS NOT NULL THEN
            INSERT INTO callback_requests (principal, request_id, callback_id, fingerprint, at)
            VALUES (p_principals[i], p_request_ids[i], v_id, p_fingerprints[i], p_at[i]);
        END IF;
        RETURN NEXT;
    END LOOP;
    INSERT INTO kpi_deltas (queue_id, start, counters)
    SELECT p_queues[k], p_kpi_starts[k], p_kpis[k] FROM unnest(v_counted) AS k;
END
$fn$;

CREATE FUNCTION holdless_update_callback(
    p_epoch bigint, p_id text, p_phone text, p_queue text, p_state text, p_open boolean,
    p_version bigint, p_created_by text, p_doc jsonb,
    p_attempt text, p_at timestamptz, p_kpi_start timestamptz, p_kpi jsonb,
    OUT outcome text, OUT old_state text, OUT lease_epoch bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_open boolean;
    v_version bigint;
BEGIN
    IF p_epoch <> 0 THEN
        SELECT epoch INTO lease_epoch FROM cluster_lease WHERE id = 1 FOR KEY SHARE;
        IF lease_epoch IS DISTINCT FROM p_epoch THEN
            outcome := 'fenced';
            RETURN;
        END IF;
    END IF;
    SELECT state, is_open, version INTO old_state, v_open, v_version FROM callbacks
     WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR v_version <> p_version - 1 THEN
        outcome := 'stale';
        old_state := NULL;
        RETURN;
    END IF;
    UPDATE callbacks SET phone = p_phone, queue_id = p_queue, state = p_state,
        is_open = p_open, version = p_version, created_by = p_created_by, doc = p_doc
     WHERE id = p_id;
    IF p_attempt IS NOT NULL THEN
        INSERT INTO settled_attempts (attempt_id, callback_id, at) VALUES (p_attempt, p_id, p_at)
        ON CONFLICT (attempt_id) DO UPDATE SET callback_id = p_id, at = p_at;
    END IF;
    IF v_open AND p_kpi IS NOT NULL THEN
        INSERT INTO kpi_deltas (queue_id, start, counters) VALUES (p_queue, p_kpi_start, p_kpi);
    END IF;
    outcome := 'updated';
END
$fn$;
"#;

/// Applies the migrations the database lacks, in one transaction. Unbounded in time:
/// the store's open calls it (the lease applies only what it needs, see
/// [`migrate_for_lease`]).
pub(super) async fn migrate_client(
    client: &mut tokio_postgres::Client,
) -> Result<(), tokio_postgres::Error> {
    migrate_in_transaction(client, MIGRATIONS).await
}

/// The last migration the cluster lease's statements need (the first creates
/// `cluster_lease`).
const LEASE_SCHEMA: i64 = 1;

/// Applies the migrations the cluster lease needs, and only those: a lease call is
/// bounded by the lease's length, and a later migration may take far longer (one
/// that rewrites the callbacks table), so the lease leaves the rest to the
/// store's open. Once they are applied this takes no lock (see [`migrate_with`]), so
/// the leader's lease connection is not held up while its store migrates.
pub(super) async fn migrate_for_lease(
    client: &mut tokio_postgres::Client,
) -> Result<(), tokio_postgres::Error> {
    let needed: Vec<(i64, &str)> = MIGRATIONS
        .iter()
        .copied()
        .filter(|(v, _)| *v <= LEASE_SCHEMA)
        .collect();
    migrate_in_transaction(client, &needed).await
}

/// [`migrate_with`] in a transaction of its own, committed.
async fn migrate_in_transaction(
    client: &mut tokio_postgres::Client,
    migrations: &[(i64, &str)],
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    migrate_with(&tx, migrations).await?;
    tx.commit().await
}

/// Applies the migrations of `migrations` the database lacks, in `tx`; returns the
/// versions it applied. A migration is applied when `schema_version` lacks
/// its number, not when it is above the highest recorded: numbers are handed out to
/// changes made in parallel, so one merged later may come below a number a database
/// already has (migration 2 after 3), and it must still run there.
pub(super) async fn migrate_with(
    tx: &Transaction<'_>,
    migrations: &[(i64, &str)],
) -> Result<Vec<i64>, tokio_postgres::Error> {
    // Nothing to do needs no lock: a node starting while another migrates (which
    // may hold the lock for a long time) does not wait when it has nothing to apply.
    let recorded: bool = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .get(0);
    if recorded {
        let applied = applied_versions(tx).await?;
        if migrations.iter().all(|(v, _)| applied.contains(v)) {
            return Ok(Vec::new());
        }
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied = applied_versions(tx).await?;
    let mut now_applied = Vec::new();
    for (version, sql) in migrations {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[version],
        )
        .await?;
        now_applied.push(*version);
    }
    Ok(now_applied)
}

async fn applied_versions(
    tx: &Transaction<'_>,
) -> Result<std::collections::BTreeSet<i64>, tokio_postgres::Error> {
    Ok(tx
        .query("SELECT version FROM schema_version", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
