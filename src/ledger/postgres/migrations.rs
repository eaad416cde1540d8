//! The PostgreSQL ledger's schema as numbered migrations, recorded in `schema_migrations`.
//! Each runs in one transaction under an advisory transaction lock, so two replicas starting
//! together migrate once: the second waits, then finds the version applied. A database written
//! by a newer ecs-renewd is refused rather than misread.
//!
//! The tables and constraints are SQLite's (`ledger/migrations.rs`, schema 2) in PostgreSQL
//! types: identity columns, `timestamptz` for times, `boolean` for flags, cents as `bigint`.
//! New here: `leader_lease`, the lease row whose `epoch` fences writes, and `attempts.epoch`,
//! the epoch of the leader that started an attempt (a new leader treats an older epoch's open
//! attempt as possibly sent).

use tokio_postgres::Client;

/// The advisory lock key migrations hold (`pg_advisory_xact_lock`): "ern" in ASCII, so it
/// reads as ecs-renewd's in `pg_locks`.
const MIGRATION_LOCK: i64 = 0x65_72_6e;

/// Every migration in order; the schema version is the number applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: the ledger as SQLite's schema 2 has it, and the lease.
    r#"
    CREATE TABLE intents (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account       text NOT NULL,
        region        text NOT NULL,
        instance_id   text NOT NULL,
        old_expiry    timestamptz NOT NULL,
        period        integer NOT NULL,
        unit          text NOT NULL,
        client_token  text NOT NULL UNIQUE,
        policy        text,
        why           text NOT NULL,
        price_cents   bigint,
        currency      text,
        status        text NOT NULL CHECK (status IN ('prepared','sent','unknown','ordered','failed','verified','superseded')),
        order_id      text,
        request_id    text,
        error_code    text,
        error_class   text,
        error_message text,
        attempts      integer NOT NULL DEFAULT 0,
        new_expiry    timestamptz,
        created_at    timestamptz NOT NULL,
        updated_at    timestamptz NOT NULL,
        verified_at   timestamptz,
        maybe_charged boolean NOT NULL DEFAULT false,
        counted_day   text
    );
    CREATE INDEX intents_by_instance ON intents (account, instance_id, id);
    CREATE INDEX intents_by_instance_id ON intents (instance_id, id);
    CREATE INDEX intents_open ON intents (status) WHERE status IN ('prepared','sent','unknown','ordered','failed');
    CREATE INDEX intents_counted ON intents (counted_day) WHERE counted_day IS NOT NULL;

    CREATE TABLE attempts (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        intent_id     bigint NOT NULL REFERENCES intents (id),
        epoch         bigint NOT NULL,
        started_at    timestamptz NOT NULL,
        finished_at   timestamptz,
        outcome       text CHECK (outcome IN ('ok','failed','unknown','not_sent')),
        order_id      text,
        request_id    text,
        error_code    text,
        error_class   text,
        error_message text
    );
    CREATE INDEX attempts_by_intent ON attempts (intent_id);

    CREATE TABLE backoff (
        instance_id   text PRIMARY KEY,
        account       text NOT NULL,
        old_expiry    timestamptz NOT NULL,
        failures      integer NOT NULL,
        retry_at      timestamptz NOT NULL,
        last_class    text NOT NULL,
        last_code     text NOT NULL
    );

    CREATE TABLE auto_renew_changes (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at            timestamptz NOT NULL,
        account       text NOT NULL,
        region        text NOT NULL,
        instance_id   text NOT NULL,
        status        text NOT NULL,
        duration      integer NOT NULL,
        unit          text NOT NULL,
        result        text NOT NULL CHECK (result IN ('pending','ok','failed','verified','mismatch')),
        request_id    text,
        error_code    text,
        error_class   text
    );
    CREATE INDEX auto_renew_changes_open ON auto_renew_changes (result) WHERE result IN ('pending', 'ok');

    CREATE TABLE spend (
        day           text NOT NULL,
        currency      text NOT NULL,
        cents         bigint NOT NULL,
        PRIMARY KEY (day, currency)
    );

    CREATE TABLE renewal_days (
        day           text PRIMARY KEY,
        renewals      integer NOT NULL
    );

    CREATE TABLE passes (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        started_at    timestamptz NOT NULL,
        finished_at   timestamptz NOT NULL,
        result        text NOT NULL,
        summary       text NOT NULL,
        next_retry_at timestamptz
    );

    CREATE TABLE sources (
        account       text NOT NULL,
        region        text NOT NULL,
        last_success  timestamptz NOT NULL,
        PRIMARY KEY (account, region)
    );

    CREATE TABLE instance_status (
        account       text NOT NULL,
        region        text NOT NULL,
        instance_id   text NOT NULL,
        name          text NOT NULL,
        expires_at    timestamptz NOT NULL,
        policy        text,
        state         text NOT NULL,
        decision      text NOT NULL,
        due_at        timestamptz,
        reason        text NOT NULL,
        failed_attempts integer NOT NULL,
        next_retry_at timestamptz,
        drift         boolean NOT NULL,
        deduction_overdue boolean NOT NULL,
        updated_at    timestamptz NOT NULL,
        generation    bigint NOT NULL,
        PRIMARY KEY (account, instance_id)
    );
    CREATE INDEX instance_status_by_source ON instance_status (account, region, generation);

    -- The lease: one row, seeded expired. Its times are the database server's clock alone.
    CREATE TABLE leader_lease (
        name            text PRIMARY KEY,
        holder          text NOT NULL DEFAULT '',
        epoch           bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
        expires_at      timestamptz NOT NULL DEFAULT '-infinity',
        renewed_at      timestamptz,
        pass_started_at timestamptz
    );
    INSERT INTO leader_lease (name) VALUES ('ecs-renewd');
    "#,
];

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A statement failed; the migration's transaction rolled back.
    #[error(
        "migrating the ledger's database to schema {version} failed: {source} — nothing of that migration was kept; check that the user may create tables in the database"
    )]
    Statement {
        /// The migration being applied.
        version: i32,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database was written by a newer ecs-renewd.
    #[error(
        "the ledger's database has schema {found}, newer than this build's {known}: it was written by a newer ecs-renewd — run that version (or newer)"
    )]
    Newer {
        /// The schema found.
        found: i32,
        /// The newest this build knows.
        known: i32,
    },
}

/// Applies every migration `client`'s database lacks, each in its own transaction under
/// [`MIGRATION_LOCK`]; returns the schema version now in place.
pub async fn migrate(client: &mut Client) -> Result<i32, MigrateError> {
    let known = MIGRATIONS.len() as i32;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i32 + 1;
        let failed = |source| MigrateError::Statement { version, source };
        let tx = client.transaction().await.map_err(failed)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(failed)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(failed)?;
        let found: i32 = tx
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(failed)?
            .get(0);
        if found > known {
            return Err(MigrateError::Newer { found, known });
        }
        if found >= version {
            continue;
        }
        tx.batch_execute(sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
    }
    Ok(known)
}
