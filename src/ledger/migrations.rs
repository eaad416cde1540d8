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
    // 2: money safety, second round.
    // - intents.maybe_charged: some attempt may have charged (its answer was lost, a busy
    //   answer said a charge was in flight, or the process stopped while it was out). Sticky:
    //   such an intent keeps its period and token until it is settled.
    // - intents.counted_day: the day (in the config's timezone) the intent was counted toward
    //   the daily belts, once, as soon as it is known or suspected to have charged.
    // - backoff keyed by instance id alone: ids are unique across accounts, and two config
    //   entries can reach the same account.
    // - passes.next_retry_at: the retry the pass left for the daemon to wake for (restarts
    //   keep it).
    // - auto_renew_changes.result 'pending': written before the call, as a renewal's intent.
    r#"
    ALTER TABLE intents ADD COLUMN maybe_charged INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE intents ADD COLUMN counted_day TEXT;
    -- Schema 1 overwrote an unknown outcome with a later refusal or "not sent": any attempt
    -- that ended unknown, or never ended, may have charged.
    UPDATE intents SET maybe_charged = 1
     WHERE status IN ('sent', 'unknown')
        OR EXISTS (SELECT 1 FROM attempts a WHERE a.intent_id = intents.id
                    AND (a.outcome = 'unknown' OR a.outcome IS NULL));
    -- Orders were counted by schema 1 (on their UTC day here: schema 1 kept no day per intent).
    UPDATE intents SET counted_day = substr(created_at, 1, 10) WHERE order_id IS NOT NULL;
    -- Every intent that may have charged is counted once, as the new code keeps it.
    INSERT INTO renewal_days (day, renewals)
        SELECT substr(updated_at, 1, 10), COUNT(*) FROM intents
         WHERE maybe_charged = 1 AND counted_day IS NULL GROUP BY 1
        ON CONFLICT (day) DO UPDATE SET renewals = renewals + excluded.renewals;
    INSERT INTO spend (day, currency, cents)
        SELECT substr(updated_at, 1, 10), currency, SUM(price_cents) FROM intents
         WHERE maybe_charged = 1 AND counted_day IS NULL AND price_cents IS NOT NULL AND currency IS NOT NULL
         GROUP BY 1, 2
        ON CONFLICT (day, currency) DO UPDATE SET cents = cents + excluded.cents;
    UPDATE intents SET counted_day = substr(updated_at, 1, 10)
     WHERE maybe_charged = 1 AND counted_day IS NULL;
    CREATE INDEX intents_by_instance_id ON intents (instance_id, id);
    CREATE INDEX intents_counted ON intents (counted_day) WHERE counted_day IS NOT NULL;

    CREATE TABLE backoff_by_instance (
        instance_id   TEXT PRIMARY KEY,
        account       TEXT NOT NULL,
        old_expiry    TEXT NOT NULL,
        failures      INTEGER NOT NULL,
        retry_at      TEXT NOT NULL,
        last_class    TEXT NOT NULL,
        last_code     TEXT NOT NULL
    );
    INSERT INTO backoff_by_instance
        SELECT instance_id, account, old_expiry, failures, retry_at, last_class, last_code
        FROM backoff WHERE true ORDER BY retry_at
        ON CONFLICT (instance_id) DO UPDATE SET
            account = excluded.account, old_expiry = excluded.old_expiry, failures = excluded.failures,
            retry_at = excluded.retry_at, last_class = excluded.last_class, last_code = excluded.last_code;
    DROP TABLE backoff;
    ALTER TABLE backoff_by_instance RENAME TO backoff;

    ALTER TABLE passes ADD COLUMN next_retry_at TEXT;

    CREATE TABLE auto_renew_changes_v2 (
        id            INTEGER PRIMARY KEY,
        at            TEXT NOT NULL,
        account       TEXT NOT NULL,
        region        TEXT NOT NULL,
        instance_id   TEXT NOT NULL,
        status        TEXT NOT NULL,
        duration      INTEGER NOT NULL,
        unit          TEXT NOT NULL,
        result        TEXT NOT NULL CHECK (result IN ('pending','ok','failed','verified','mismatch')),
        request_id    TEXT,
        error_code    TEXT,
        error_class   TEXT
    );
    INSERT INTO auto_renew_changes_v2 SELECT * FROM auto_renew_changes;
    DROP TABLE auto_renew_changes;
    ALTER TABLE auto_renew_changes_v2 RENAME TO auto_renew_changes;
    CREATE INDEX auto_renew_changes_open ON auto_renew_changes (result) WHERE result IN ('pending', 'ok');
    "#,
];

/// The schema version this build writes.
pub fn current_version() -> u32 {
    MIGRATIONS.len() as u32
}
