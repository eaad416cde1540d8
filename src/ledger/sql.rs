//! One statement, two engines: the values a ledger statement binds and the cells it reads, the
//! same for SQLite and PostgreSQL, so each statement of the ledger is written once (in
//! SQLite's `?N` form; PostgreSQL gets `$N`) and the ledger's facade does not say which
//! engine it has. What differs is kept here: SQLite holds times as RFC 3339 text (or Unix
//! seconds in the status table) and flags as 0/1, PostgreSQL as `timestamptz` and `boolean`;
//! a value is bound as the type the server asks for, and read back into the same Rust type
//! from either.
//!
//! The few statements that cannot be the same text in both (a JSON list expanded into rows)
//! ask [`Tx::engine`] which to run.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::BytesMut;
use chrono::{DateTime, SubsecRound, Utc};
use rusqlite::types::{ToSqlOutput, ValueRef};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::cloud::time;

/// Which engine a statement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The embedded SQLite file (one process).
    Sqlite,
    /// A PostgreSQL database (replicas sharing one ledger).
    Postgres,
}

/// Why a statement failed, from either engine, or a value it could not convert.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite's error.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL's error (the server's message, or the connection's end).
    #[error("{}", postgres_words(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A value that does not fit where it was read or written (names the column).
    #[error("{0}")]
    Value(String),
    /// The connection to the database is gone and could not be made again.
    #[error("{0}")]
    Connection(String),
}

/// A PostgreSQL error in words: the server's message and code (the client's own `Display`
/// says only "db error"), or the client's.
fn postgres_words(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// `error` as rusqlite's, to travel through the SQLite group commit (which speaks rusqlite);
/// [`from_sqlite`] takes it back out.
pub fn into_sqlite(error: DbError) -> rusqlite::Error {
    match error {
        DbError::Sqlite(error) => error,
        other => rusqlite::Error::ToSqlConversionFailure(Box::new(other)),
    }
}

/// The error [`into_sqlite`] wrapped, or SQLite's own.
pub fn from_sqlite(error: rusqlite::Error) -> DbError {
    match error {
        rusqlite::Error::ToSqlConversionFailure(inner) => match inner.downcast::<DbError>() {
            Ok(ours) => *ours,
            Err(other) => DbError::Sqlite(rusqlite::Error::ToSqlConversionFailure(other)),
        },
        other => DbError::Sqlite(other),
    }
}

const NO_ROWS: &str = "the statement returned no row";

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    /// SQL NULL.
    Null,
    /// An integer (SQLite INTEGER; PostgreSQL smallint, integer or bigint, as the column is).
    Int(i64),
    /// Text.
    Text(Cow<'a, str>),
    /// A time, to the second: RFC 3339 text in SQLite, `timestamptz` in PostgreSQL.
    Time(DateTime<Utc>),
    /// A time, to the second: Unix seconds in SQLite (the status table), `timestamptz` in
    /// PostgreSQL.
    Secs(DateTime<Utc>),
    /// A flag: 0/1 in SQLite, `boolean` in PostgreSQL.
    Bool(bool),
}

impl Value<'_> {
    /// The value holding its own text.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Int(n) => Value::Int(n),
            Value::Text(text) => Value::Text(Cow::Owned(text.into_owned())),
            Value::Time(t) => Value::Time(t),
            Value::Secs(t) => Value::Secs(t),
            Value::Bool(b) => Value::Bool(b),
        }
    }
}

/// The owned values of a statement's parameters, in `?1, ?2, …` order: `values![a, b]`.
macro_rules! values {
    ($($value:expr),* $(,)?) => {
        vec![$($crate::ledger::sql::Bind::value(&$value).into_owned()),*]
    };
}
pub(crate) use values;

/// A Rust value that binds as a [`Value`].
pub trait Bind {
    /// The value to bind.
    fn value(&self) -> Value<'_>;
}

macro_rules! bind_int {
    ($($t:ty),*) => {$(
        impl Bind for $t {
            fn value(&self) -> Value<'_> {
                Value::Int(*self as i64)
            }
        }
    )*};
}
bind_int!(i64, i32, u32, usize);

impl Bind for bool {
    fn value(&self) -> Value<'_> {
        Value::Bool(*self)
    }
}
impl Bind for str {
    fn value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl Bind for String {
    fn value(&self) -> Value<'_> {
        Value::Text(Cow::Borrowed(self))
    }
}
impl Bind for DateTime<Utc> {
    fn value(&self) -> Value<'_> {
        Value::Time(*self)
    }
}
impl<T: Bind + ?Sized> Bind for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}
impl<T: Bind> Bind for Option<T> {
    fn value(&self) -> Value<'_> {
        self.as_ref().map_or(Value::Null, Bind::value)
    }
}

/// A time held as Unix seconds in SQLite (the status table's columns).
#[derive(Debug, Clone, Copy)]
pub struct Secs(pub DateTime<Utc>);

impl Bind for Secs {
    fn value(&self) -> Value<'_> {
        Value::Secs(self.0)
    }
}

/// The parameters of a statement, in `?1, ?2, …` order: `args![a, b]`.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        &[$(&$value as &dyn $crate::ledger::sql::Bind),*][..]
    };
}
pub(crate) use args;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as Owned;
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(Owned::Null),
            Value::Int(n) => ToSqlOutput::Owned(Owned::Integer(*n)),
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Time(t) => ToSqlOutput::Owned(Owned::Text(super::ts(*t))),
            Value::Secs(t) => ToSqlOutput::Owned(Owned::Integer(t.timestamp())),
            Value::Bool(b) => ToSqlOutput::Owned(Owned::Integer(i64::from(*b))),
        })
    }
}

/// A [`Value`] sent as the type the server asks for (an integer into an `integer` column is
/// four bytes, into a `bigint` eight).
#[derive(Debug)]
struct PgArg<'a>(Value<'a>);

impl ToSql for PgArg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::INT2 => i16::try_from(*n)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
                Type::BOOL => (*n != 0).to_sql(ty, out),
                _ => n.to_sql(ty, out),
            },
            Value::Text(text) => text.as_ref().to_sql(ty, out),
            Value::Time(t) | Value::Secs(t) => t.trunc_subsecs(0).to_sql(ty, out),
            Value::Bool(b) => match *ty {
                Type::INT2 | Type::INT4 | Type::INT8 => {
                    PgArg(Value::Int(i64::from(*b))).to_sql(ty, out)
                }
                _ => b.to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A value as read from either engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'r> {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text, borrowed from the row.
    Text(&'r str),
    /// A PostgreSQL `timestamptz`.
    Time(DateTime<Utc>),
    /// A PostgreSQL `boolean`.
    Bool(bool),
}

impl Cell<'_> {
    /// The value as a message shows it.
    pub fn describe(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Int(n) => n.to_string(),
            Cell::Real(x) => x.to_string(),
            Cell::Text(text) => (*text).to_owned(),
            Cell::Time(t) => super::ts(*t),
            Cell::Bool(b) => b.to_string(),
        }
    }
}

impl<'r> FromSql<'r> for Cell<'r> {
    fn from_sql(
        ty: &Type,
        raw: &'r [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT2 => Cell::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Cell::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
            Type::FLOAT8 => Cell::Real(f64::from_sql(ty, raw)?),
            Type::BOOL => Cell::Bool(bool::from_sql(ty, raw)?),
            Type::TIMESTAMPTZ => Cell::Time(DateTime::<Utc>::from_sql(ty, raw)?),
            _ => Cell::Text(<&str as FromSql>::from_sql(ty, raw).map_err(|_| {
                format!("a column of type {ty} (cast it to bigint or text in the statement)")
            })?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl<'r> Cell<'r> {
    fn from_sqlite(value: ValueRef<'r>) -> Result<Cell<'r>, String> {
        Ok(match value {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(n) => Cell::Int(n),
            ValueRef::Real(x) => Cell::Real(x),
            ValueRef::Text(bytes) => {
                Cell::Text(std::str::from_utf8(bytes).map_err(|_| "text that is not UTF-8")?)
            }
            ValueRef::Blob(_) => return Err("a blob".into()),
        })
    }
}

/// A Rust value read from a [`Cell`]; `Err` says what the cell held.
pub trait FromCell<'r>: Sized {
    /// The value, or what the cell held instead.
    fn from_cell(cell: Cell<'r>) -> Result<Self, Cell<'r>>;
}

impl<'r> FromCell<'r> for i64 {
    fn from_cell(cell: Cell<'r>) -> Result<Self, Cell<'r>> {
        match cell {
            Cell::Int(n) => Ok(n),
            other => Err(other),
        }
    }
}
impl<'r> FromCell<'r> for u32 {
    fn from_cell(cell: Cell<'r>) -> Result<Self, Cell<'r>> {
        match cell {
            Cell::Int(n) => u32::try_from(n).map_err(|_| cell),
            other => Err(other),
        }
    }
}
impl<'r> FromCell<'r> for bool {
    fn from_cell(cell: Cell<'r>) -> Result<Self, Cell<'r>> {
        match cell {
            Cell::Bool(b) => Ok(b),
            Cell::Int(0) => Ok(false),
            Cell::Int(1) => Ok(true),
            other => Err(other),
        }
    }
}
impl<'r> FromCell<'r> for &'r str {
    fn from_cell(cell: Cell<'r>) -> Result<Self, Cell<'r>> {
        match cell {
            Cell::Text(text) => Ok(text),
            other => Err(other),
        }
    }
}
impl<'r> FromCell<'r> for String {
    fn from_cell(cell: Cell<'r>) -> Result<Self, Cell<'r>> {
        <&str>::from_cell(cell).map(str::to_owned)
    }
}
/// A time: `timestamptz` (PostgreSQL), RFC 3339 text or Unix seconds (SQLite).
impl<'r> FromCell<'r> for DateTime<Utc> {
    fn from_cell(cell: Cell<'r>) -> Result<Self, Cell<'r>> {
        match cell {
            Cell::Time(t) => Ok(t),
            Cell::Text(text) => time::parse(text).map_err(|_| cell),
            Cell::Int(secs) => DateTime::<Utc>::from_timestamp(secs, 0).ok_or(cell),
            other => Err(other),
        }
    }
}
impl<'r, T: FromCell<'r>> FromCell<'r> for Option<T> {
    fn from_cell(cell: Cell<'r>) -> Result<Self, Cell<'r>> {
        match cell {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// A column, by position or by the name the statement gives it.
#[derive(Debug, Clone, Copy)]
pub enum Col<'a> {
    /// The n-th column, from 0.
    At(usize),
    /// The column of this name.
    Named(&'a str),
}

impl From<usize> for Col<'_> {
    fn from(n: usize) -> Self {
        Col::At(n)
    }
}
impl<'a> From<&'a str> for Col<'a> {
    fn from(name: &'a str) -> Self {
        Col::Named(name)
    }
}

impl std::fmt::Display for Col<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Col::At(n) => write!(f, "column {n}"),
            Col::Named(name) => write!(f, "column {name}"),
        }
    }
}

/// A row from either engine.
pub enum SqlRow<'r> {
    /// A SQLite row.
    Sqlite(&'r rusqlite::Row<'r>),
    /// A PostgreSQL row.
    Postgres(&'r tokio_postgres::Row),
}

impl<'r> SqlRow<'r> {
    /// The cell at `col`.
    pub fn cell<'c>(&self, col: impl Into<Col<'c>>) -> Result<Cell<'r>, DbError> {
        let col = col.into();
        match self {
            SqlRow::Sqlite(row) => {
                let value = match col {
                    Col::At(n) => row.get_ref(n),
                    Col::Named(name) => row.get_ref(name),
                }?;
                Cell::from_sqlite(value)
                    .map_err(|what| DbError::Value(format!("{col} holds {what}")))
            }
            SqlRow::Postgres(row) => Ok(match col {
                Col::At(n) => row.try_get::<_, Cell<'r>>(n),
                Col::Named(name) => row.try_get::<_, Cell<'r>>(name),
            }?),
        }
    }

    /// The value at `col` as `T`.
    pub fn get<'c, T: FromCell<'r>>(&self, col: impl Into<Col<'c>>) -> Result<T, DbError> {
        let col = col.into();
        T::from_cell(self.cell(col)?).map_err(|held| {
            DbError::Value(format!(
                "{col} holds {:?}, which is not a {}",
                held.describe(),
                std::any::type_name::<T>()
            ))
        })
    }
}

/// `sql` with SQLite's `?N` parameters written as PostgreSQL's `$N` (outside quotes).
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        let numbered = chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if c == '?' && !quoted && numbered {
            '$'
        } else {
            c
        });
    }
    out
}

/// A transaction (or, for reads, a connection) of either engine.
pub enum Tx<'t> {
    /// SQLite: statements are kept prepared on the connection.
    Sqlite(&'t rusqlite::Connection),
    /// PostgreSQL: an open transaction; statements are prepared once per connection (the
    /// pool's statement cache).
    Postgres(&'t deadpool_postgres::Transaction<'t>),
}

impl Tx<'_> {
    /// Which engine this is.
    pub fn engine(&self) -> Engine {
        match self {
            Tx::Sqlite(_) => Engine::Sqlite,
            Tx::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub fn exec(&mut self, sql: &str, args: &[&dyn Bind]) -> Result<u64, DbError> {
        match self {
            Tx::Sqlite(conn) => {
                let values = args.iter().map(|a| a.value());
                Ok(conn
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(values))? as u64)
            }
            Tx::Postgres(tx) => {
                let statement = prepare(tx, sql)?;
                let owned: Vec<PgArg<'_>> = args.iter().map(|a| PgArg(a.value())).collect();
                let refs = params(&owned);
                Ok(block_on(tx.execute(&statement, &refs))?)
            }
        }
    }

    /// Runs `sql` once per item, with the values `bind` gives it, and returns the rows changed
    /// in all. SQLite runs them one after another (each is a call into the library);
    /// PostgreSQL sends them pipelined, a few hundred at a time, so a status table of 100,000
    /// lines costs a few hundred round trips rather than 100,000.
    pub fn exec_many<T>(
        &mut self,
        sql: &str,
        items: &[T],
        bind: impl Fn(&T) -> Vec<Value<'static>>,
    ) -> Result<u64, DbError> {
        match self {
            Tx::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut changed = 0;
                for item in items {
                    changed += statement.execute(rusqlite::params_from_iter(bind(item)))? as u64;
                }
                Ok(changed)
            }
            Tx::Postgres(tx) => {
                let statement = prepare(tx, sql)?;
                let mut changed = 0;
                for chunk in items.chunks(PIPELINE) {
                    let owned: Vec<Vec<PgArg<'static>>> = chunk
                        .iter()
                        .map(|item| bind(item).into_iter().map(PgArg).collect())
                        .collect();
                    let refs: Vec<_> = owned.iter().map(|args| params(args)).collect();
                    let sent = refs.iter().map(|args| tx.execute(&statement, args));
                    changed += block_on(futures_util::future::try_join_all(sent))?
                        .into_iter()
                        .sum::<u64>();
                }
                Ok(changed)
            }
        }
    }

    /// Inserts one row per item into `table`'s `columns` (`bind` gives an item's values in
    /// their order); `tail` follows the rows (an `ON CONFLICT` clause, or nothing). SQLite runs
    /// a one-row statement per item ([`Tx::exec_many`]). PostgreSQL sends the rows as one JSON
    /// list, made rows of the table's own column types by `json_populate_recordset`: one
    /// statement (one text, prepared once) whatever the count, where a thousand one-row
    /// statements cost the server a thousand binds and executions. The items must not repeat
    /// a conflict key: one statement may not change a row twice.
    pub fn insert_rows<T>(
        &mut self,
        table: &str,
        columns: &[&str],
        tail: &str,
        items: &[T],
        bind: impl Fn(&T) -> Vec<Value<'static>>,
    ) -> Result<u64, DbError> {
        let list = columns.join(", ");
        match self {
            Tx::Sqlite(_) => {
                let numbered: Vec<String> = (1..=columns.len()).map(|n| format!("?{n}")).collect();
                let sql = format!(
                    "INSERT INTO {table} ({list}) VALUES ({}) {tail}",
                    numbered.join(", ")
                );
                self.exec_many(&sql, items, bind)
            }
            Tx::Postgres(tx) => {
                let sql = format!(
                    "INSERT INTO {table} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{table}, ?1::text::json) {tail}"
                );
                let statement = prepare(tx, &sql)?;
                let mut changed = 0;
                for chunk in items.chunks(ROWS_PER_INSERT) {
                    let rows = json_rows(columns, chunk.iter().map(&bind));
                    changed += block_on(tx.execute(&statement, &[&rows]))?;
                }
                Ok(changed)
            }
        }
    }

    /// Runs `sql`, which returns one row, once per item (as [`Tx::exec_many`]: pipelined on
    /// PostgreSQL), and maps each item's row, in order.
    pub fn one_each<T, R>(
        &mut self,
        sql: &str,
        items: &[T],
        bind: impl Fn(&T) -> Vec<Value<'static>>,
        map: impl Fn(&SqlRow<'_>) -> Result<R, DbError>,
    ) -> Result<Vec<R>, DbError> {
        let mut out = Vec::with_capacity(items.len());
        match self {
            Tx::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                for item in items {
                    let mut rows = statement.query(rusqlite::params_from_iter(bind(item)))?;
                    let row = rows.next()?.ok_or_else(|| DbError::Value(NO_ROWS.into()))?;
                    out.push(map(&SqlRow::Sqlite(row))?);
                }
            }
            Tx::Postgres(tx) => {
                let statement = prepare(tx, sql)?;
                for chunk in items.chunks(PIPELINE) {
                    let owned: Vec<Vec<PgArg<'static>>> = chunk
                        .iter()
                        .map(|item| bind(item).into_iter().map(PgArg).collect())
                        .collect();
                    let refs: Vec<_> = owned.iter().map(|args| params(args)).collect();
                    let sent = refs.iter().map(|args| tx.query_one(&statement, args));
                    for row in block_on(futures_util::future::try_join_all(sent))? {
                        out.push(map(&SqlRow::Postgres(&row))?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Runs a statement and hands each row to `each`, in order.
    pub fn each(
        &mut self,
        sql: &str,
        args: &[&dyn Bind],
        mut each: impl FnMut(&SqlRow<'_>) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let values = args.iter().map(|a| a.value());
                let mut rows = statement.query(rusqlite::params_from_iter(values))?;
                while let Some(row) = rows.next()? {
                    each(&SqlRow::Sqlite(row))?;
                }
                Ok(())
            }
            Tx::Postgres(tx) => {
                let statement = prepare(tx, sql)?;
                let owned: Vec<PgArg<'_>> = args.iter().map(|a| PgArg(a.value())).collect();
                let refs = params(&owned);
                for row in block_on(tx.query(&statement, &refs))? {
                    each(&SqlRow::Postgres(&row))?;
                }
                Ok(())
            }
        }
    }

    /// Every row of a statement, each through `map`.
    pub fn all<T>(
        &mut self,
        sql: &str,
        args: &[&dyn Bind],
        mut map: impl FnMut(&SqlRow<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let mut out = Vec::new();
        self.each(sql, args, |row| {
            out.push(map(row)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of a statement through `map`, if there is one.
    pub fn first<T>(
        &mut self,
        sql: &str,
        args: &[&dyn Bind],
        map: impl FnOnce(&SqlRow<'_>) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        let mut map = Some(map);
        let mut out = None;
        self.each(sql, args, |row| {
            if let Some(map) = map.take() {
                out = Some(map(row)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The one row a statement must return, through `map`.
    pub fn one<T>(
        &mut self,
        sql: &str,
        args: &[&dyn Bind],
        map: impl FnOnce(&SqlRow<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.first(sql, args, map)?
            .ok_or_else(|| DbError::Value(NO_ROWS.into()))
    }
}

/// `args` as the parameter list tokio-postgres takes.
fn params<'a>(args: &'a [PgArg<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

/// The most rows one statement of [`Tx::insert_rows`] sends on PostgreSQL (a few hundred
/// KiB of JSON).
const ROWS_PER_INSERT: usize = 2_000;

/// `rows` as a JSON list of objects keyed by `columns`, for `json_populate_recordset`: times
/// as RFC 3339 text (to the second), flags as booleans, NULL as null. Written straight into
/// the text (a status batch is thousands of fields).
fn json_rows<'v>(columns: &[&str], rows: impl Iterator<Item = Vec<Value<'v>>>) -> String {
    // serde_json escapes a string into a byte buffer; that cannot fail.
    fn text(out: &mut Vec<u8>, s: &str) {
        serde_json::to_writer(&mut *out, s).expect("a string can be written as JSON");
    }
    let mut out = Vec::with_capacity(64);
    out.push(b'[');
    for (i, values) in rows.enumerate() {
        out.extend_from_slice(if i == 0 { b"{" } else { b",{" });
        for (j, (column, value)) in columns.iter().zip(values).enumerate() {
            if j > 0 {
                out.push(b',');
            }
            text(&mut out, column);
            out.push(b':');
            match value {
                Value::Null => out.extend_from_slice(b"null"),
                Value::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
                Value::Text(s) => text(&mut out, &s),
                Value::Time(t) | Value::Secs(t) => text(&mut out, &super::ts(t)),
                Value::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    String::from_utf8(out).expect("JSON written from strings is UTF-8")
}

/// How many statements [`Tx::exec_many`] keeps in flight on PostgreSQL.
const PIPELINE: usize = 256;

/// The prepared form of `sql` on this connection, prepared on first use.
fn prepare(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
) -> Result<tokio_postgres::Statement, DbError> {
    Ok(block_on(tx.prepare_cached(&to_postgres(sql)))?)
}

/// Wakes the thread that waits in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread until it is ready. The ledger's facade is synchronous, and
/// is called from plain threads and from the runtime's threads alike (as SQLite's calls are);
/// a PostgreSQL client future only talks to its connection's task (which runs on the
/// ledger's own runtime thread) through channels, so it can be waited for here without a
/// runtime — where `Runtime::block_on` would refuse to nest.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_for_postgres_are_json_objects_of_the_columns_types() {
        let t = "2026-12-07T07:00:00.750Z".parse::<DateTime<Utc>>().unwrap();
        let rows = vec![
            vec![
                Value::Text("i-1".into()),
                Value::Int(3),
                Value::Secs(t),
                Value::Bool(true),
            ],
            vec![
                Value::Text("a\"b".into()),
                Value::Null,
                Value::Time(t),
                Value::Bool(false),
            ],
        ];
        assert_eq!(
            json_rows(&["id", "n", "at", "flag"], rows.into_iter()),
            r#"[{"id":"i-1","n":3,"at":"2026-12-07T07:00:00Z","flag":true},{"id":"a\"b","n":null,"at":"2026-12-07T07:00:00Z","flag":false}]"#
        );
    }

    #[test]
    fn numbered_parameters_become_dollars_outside_quotes() {
        assert_eq!(
            to_postgres("SELECT ?1, '?2', ?10 FROM t WHERE a = '?' AND b = ?2"),
            "SELECT $1, '?2', $10 FROM t WHERE a = '?' AND b = $2"
        );
    }

    #[test]
    fn cells_read_into_the_same_types_from_either_engine() {
        let t = DateTime::<Utc>::from_timestamp(1_780_000_000, 0).unwrap();
        let text = super::super::ts(t);
        for cell in [Cell::Time(t), Cell::Text(&text), Cell::Int(t.timestamp())] {
            assert_eq!(DateTime::<Utc>::from_cell(cell), Ok(t));
        }
        assert_eq!(bool::from_cell(Cell::Int(1)), Ok(true));
        assert_eq!(bool::from_cell(Cell::Bool(false)), Ok(false));
        assert_eq!(bool::from_cell(Cell::Int(2)), Err(Cell::Int(2)));
        assert_eq!(u32::from_cell(Cell::Int(-1)), Err(Cell::Int(-1)));
        assert_eq!(Option::<i64>::from_cell(Cell::Null), Ok(None));
        assert_eq!(
            DateTime::<Utc>::from_cell(Cell::Text("yesterday")),
            Err(Cell::Text("yesterday"))
        );
    }
}
