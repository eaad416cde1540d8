//! The ledger's schema, as numbered migrations recorded in `PRAGMA user_version`. A ledger
//! written by a newer ecs-renewd is refused rather than misread.

/// Every migration in order; the schema version is the number applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: money records, backoff, auto-renew changes, spend, passes, sources, status snapshot.
    r#"
    CREATE TABLE intents (
        id            INTEGER PRIMARY KEY,
        account       TEXT NOT NULL,
        region        TEXT NOT NULL,
        instance_id   TEXT NOT NULL,
        old_expiry    TEXT NOT NULL,
        period        INTEGER NOT NULL,
        unit          TEXT NOT NULL,
        client_token  TEXT NOT NULL UNIQUE,
        policy        TEXT,
        why           TEXT NOT NULL,
        price_cents   INTEGER,
        currency      TEXT,
        status        TEXT NOT NULL CHECK (status IN ('prepared','sent','unknown','ordered','failed','verified','superseded')),
        order_id      TEXT,
        request_id    TEXT,
        error_code    TEXT,
        error_class   TEXT,
        error_message TEXT,
        attempts      INTEGER NOT NULL DEFAULT 0,
        new_expiry    TEXT,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL,
        verified_at   TEXT
    );
    CREATE INDEX intents_by_instance ON intents (account, instance_id, id);
    CREATE INDEX intents_open ON intents (status) WHERE status IN ('prepared','sent','unknown','ordered','failed');

    CREATE TABLE attempts (
        id            INTEGER PRIMARY KEY,
        intent_id     INTEGER NOT NULL REFERENCES intents (id),
        started_at    TEXT NOT NULL,
        finished_at   TEXT,
        outcome       TEXT CHECK (outcome IN ('ok','failed','unknown','not_sent')),
        order_id      TEXT,
        request_id    TEXT,
        error_code    TEXT,
        error_class   TEXT,
        error_message TEXT
    );
    CREATE INDEX attempts_by_intent ON attempts (intent_id);

    CREATE TABLE backoff (
        account       TEXT NOT NULL,
        instance_id   TEXT NOT NULL,
        old_expiry    TEXT NOT NULL,
        failures      INTEGER NOT NULL,
        retry_at      TEXT NOT NULL,
        last_class    TEXT NOT NULL,
        last_code     TEXT NOT NULL,
        PRIMARY KEY (account, instance_id)
    );

    CREATE TABLE auto_renew_changes (
        id            INTEGER PRIMARY KEY,
        at            TEXT NOT NULL,
        account       TEXT NOT NULL,
        region        TEXT NOT NULL,
        instance_id   TEXT NOT NULL,
        status        TEXT NOT NULL,
        duration      INTEGER NOT NULL,
        unit          TEXT NOT NULL,
        result        TEXT NOT NULL CHECK (result IN ('ok','failed','verified','mismatch')),
        request_id    TEXT,
        error_code    TEXT,
        error_class   TEXT
    );

    CREATE TABLE spend (
        day           TEXT NOT NULL,
        currency      TEXT NOT NULL,
        cents         INTEGER NOT NULL,
        PRIMARY KEY (day, currency)
    );

    CREATE TABLE renewal_days (
        day           TEXT PRIMARY KEY,
        renewals      INTEGER NOT NULL
    );

    CREATE TABLE passes (
        id            INTEGER PRIMARY KEY,
        started_at    TEXT NOT NULL,
        finished_at   TEXT NOT NULL,
        result        TEXT NOT NULL,
        summary       TEXT NOT NULL
    );

    CREATE TABLE sources (
        account       TEXT NOT NULL,
        region        TEXT NOT NULL,
        last_success  TEXT NOT NULL,
        PRIMARY KEY (account, region)
    );

    CREATE TABLE instance_status (
        account       TEXT NOT NULL,
        region        TEXT NOT NULL,
        instance_id   TEXT NOT NULL,
        name          TEXT NOT NULL,
        expires_at    INTEGER NOT NULL,
        policy        TEXT,
        state         TEXT NOT NULL,
        decision      TEXT NOT NULL,
        due_at        INTEGER,
        reason        TEXT NOT NULL,
        failed_attempts INTEGER NOT NULL,
        next_retry_at INTEGER,
        drift         INTEGER NOT NULL,
        deduction_overdue INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        generation    INTEGER NOT NULL,
        PRIMARY KEY (account, instance_id)
    );
    CREATE INDEX instance_status_by_source ON instance_status (account, region, generation);
    "#,
];

/// The schema version this build writes.
pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}
