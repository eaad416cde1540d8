//! `ecs-renewd ledger copy`: a SQLite ledger's rows into an empty PostgreSQL one, in one
//! transaction (all or nothing), ids kept (attempts point at their intents) and every value
//! converted by the database: RFC 3339 text to `timestamptz`, Unix seconds to `timestamptz`,
//! 0/1 to `boolean`. Attempts copied get epoch 0: they were made before any lease.

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::migrations::{MigrateError, migrate};
use super::session::Session;
use crate::ledger::{Ledger, LedgerError};

/// How a column's SQLite value becomes the PostgreSQL one.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Text as is.
    Text,
    /// An integer (integer or bigint column).
    Int,
    /// 0/1 to boolean.
    Bool,
    /// RFC 3339 text to timestamptz.
    Time,
    /// Unix seconds to timestamptz.
    Seconds,
}

impl Kind {
    /// The parameter `$n` as the column's value.
    fn placeholder(self, n: usize) -> String {
        match self {
            Kind::Text => format!("${n}::text"),
            Kind::Int => format!("${n}::bigint"),
            Kind::Bool => format!("(${n}::bigint <> 0)"),
            Kind::Time => format!("${n}::text::timestamptz"),
            Kind::Seconds => format!("to_timestamp(${n}::bigint)"),
        }
    }
}

use Kind::{Bool, Int, Seconds, Text, Time};

/// A table's name, whether its `id` is an identity column whose sequence must move past the
/// copied ids, and its columns.
type Table = (&'static str, bool, &'static [(&'static str, Kind)]);

/// Every table in dependency order, with its columns (SQLite schema 2, `ledger/migrations.rs`).
const TABLES: &[Table] = &[
    (
        "intents",
        true,
        &[
            ("id", Int),
            ("account", Text),
            ("region", Text),
            ("instance_id", Text),
            ("old_expiry", Time),
            ("period", Int),
            ("unit", Text),
            ("client_token", Text),
            ("policy", Text),
            ("why", Text),
            ("price_cents", Int),
            ("currency", Text),
            ("status", Text),
            ("order_id", Text),
            ("request_id", Text),
            ("error_code", Text),
            ("error_class", Text),
            ("error_message", Text),
            ("attempts", Int),
            ("new_expiry", Time),
            ("created_at", Time),
            ("updated_at", Time),
            ("verified_at", Time),
            ("maybe_charged", Bool),
            ("counted_day", Text),
        ],
    ),
    (
        "attempts",
        true,
        &[
            ("id", Int),
            ("intent_id", Int),
            ("started_at", Time),
            ("finished_at", Time),
            ("outcome", Text),
            ("order_id", Text),
            ("request_id", Text),
            ("error_code", Text),
            ("error_class", Text),
            ("error_message", Text),
        ],
    ),
    (
        "backoff",
        false,
        &[
            ("instance_id", Text),
            ("account", Text),
            ("old_expiry", Time),
            ("failures", Int),
            ("retry_at", Time),
            ("last_class", Text),
            ("last_code", Text),
        ],
    ),
    (
        "auto_renew_changes",
        true,
        &[
            ("id", Int),
            ("at", Time),
            ("account", Text),
            ("region", Text),
            ("instance_id", Text),
            ("status", Text),
            ("duration", Int),
            ("unit", Text),
            ("result", Text),
            ("request_id", Text),
            ("error_code", Text),
            ("error_class", Text),
        ],
    ),
    (
        "spend",
        false,
        &[("day", Text), ("currency", Text), ("cents", Int)],
    ),
    ("renewal_days", false, &[("day", Text), ("renewals", Int)]),
    (
        "passes",
        true,
        &[
            ("id", Int),
            ("started_at", Time),
            ("finished_at", Time),
            ("result", Text),
            ("summary", Text),
            ("next_retry_at", Time),
        ],
    ),
    (
        "sources",
        false,
        &[("account", Text), ("region", Text), ("last_success", Time)],
    ),
    (
        "instance_status",
        false,
        &[
            ("account", Text),
            ("region", Text),
            ("instance_id", Text),
            ("name", Text),
            ("expires_at", Seconds),
            ("policy", Text),
            ("state", Text),
            ("decision", Text),
            ("due_at", Seconds),
            ("reason", Text),
            ("failed_attempts", Int),
            ("next_retry_at", Seconds),
            ("drift", Bool),
            ("deduction_overdue", Bool),
            ("updated_at", Seconds),
            ("generation", Int),
        ],
    ),
];

/// Why a ledger could not be copied. Nothing is kept in the target when any step fails.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The source ledger could not be read.
    #[error(transparent)]
    Source(#[from] LedgerError),
    /// The target's schema could not be put in place.
    #[error(transparent)]
    Schema(#[from] MigrateError),
    /// The target already holds a ledger.
    #[error(
        "the target database already holds ledger rows ({rows} in {table}): ledger copy fills only an empty ledger, so that no record is mixed with another's — give it a new database"
    )]
    NotEmpty {
        /// The first table found with rows.
        table: &'static str,
        /// How many.
        rows: i64,
    },
    /// A statement on the target failed; the copy was rolled back.
    #[error(
        "copying table {table} into the target failed: {source} — nothing was kept there; the source ledger is unchanged"
    )]
    Target {
        /// The table being copied.
        table: &'static str,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Rows copied per table, in copy order.
pub type Copied = Vec<(&'static str, u64)>;

/// Copies every row of `source` into the database `target` is connected to, which must hold no
/// ledger rows yet (its schema is created if missing).
pub async fn copy_ledger(source: &Ledger, target: &mut Session) -> Result<Copied, CopyError> {
    migrate(&mut target.client).await?;
    let tx = target
        .client
        .transaction()
        .await
        .map_err(|source| CopyError::Target {
            table: "intents",
            source,
        })?;
    for (table, _, _) in TABLES {
        let failed = |source| CopyError::Target { table, source };
        let rows: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(failed)?
            .get(0);
        if rows > 0 {
            return Err(CopyError::NotEmpty { table, rows });
        }
    }
    let mut copied = Vec::new();
    for (table, identity, columns) in TABLES {
        let failed = |source| CopyError::Target { table, source };
        let rows = source.table_rows(table, &columns.iter().map(|c| c.0).collect::<Vec<_>>())?;
        let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
        let values: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| kind.placeholder(i + 1))
            .collect();
        let overriding = if *identity {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let (names, values) = if *table == "attempts" {
            (
                format!("{}, epoch", names.join(", ")),
                format!("{}, 0", values.join(", ")),
            )
        } else {
            (names.join(", "), values.join(", "))
        };
        let insert = tx
            .prepare(&format!(
                "INSERT INTO {table} ({names}){overriding} VALUES ({values})"
            ))
            .await
            .map_err(failed)?;
        for row in &rows {
            let params: Vec<&(dyn ToSql + Sync)> =
                row.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            tx.execute(&insert, &params).await.map_err(failed)?;
        }
        if *identity {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) FROM {table}"
                ),
                &[],
            )
            .await
            .map_err(failed)?;
        }
        copied.push((*table, rows.len() as u64));
    }
    tx.commit().await.map_err(|source| CopyError::Target {
        table: "instance_status",
        source,
    })?;
    Ok(copied)
}

/// One SQLite value on its way to PostgreSQL: bound as `bigint` or `text` (the placeholders
/// cast to the column's type).
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
}

impl ToSql for Cell {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self, *ty == Type::INT8) {
            (Cell::Null, _) => Ok(IsNull::Yes),
            (Cell::Int(n), true) => n.to_sql(ty, out),
            (Cell::Int(n), false) => n.to_string().to_sql(ty, out),
            (Cell::Text(t), true) => t
                .parse::<i64>()
                .map_err(|_| format!("{t:?} is not a whole number"))?
                .to_sql(ty, out),
            (Cell::Text(t), false) => t.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <String as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl Ledger {
    /// Every row of `table` (a name of `TABLES`), these `columns`, in rowid order.
    fn table_rows(&self, table: &str, columns: &[&str]) -> Result<Vec<Vec<Cell>>, LedgerError> {
        use rusqlite::types::ValueRef;
        let read = |source: rusqlite::Error| LedgerError::Read {
            what: "reading the ledger to copy it",
            source: source.into(),
        };
        let conn = self.conn();
        let mut statement = conn
            .prepare(&format!(
                "SELECT {} FROM {table} ORDER BY rowid",
                columns.join(", ")
            ))
            .map_err(read)?;
        let rows = statement
            .query_map([], |row| {
                (0..columns.len())
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => Cell::Null,
                            ValueRef::Integer(n) => Cell::Int(n),
                            ValueRef::Real(x) => Cell::Text(x.to_string()),
                            ValueRef::Text(t) | ValueRef::Blob(t) => {
                                Cell::Text(String::from_utf8_lossy(t).into_owned())
                            }
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Cell>>>()
            })
            .map_err(read)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(read)
    }
}
