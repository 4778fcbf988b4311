//! Where the run history lives: an embedded SQLite file (the default) or a PostgreSQL
//! database that many runners share. [`History`](super::History) writes its SQL once, with
//! `?N` placeholders and the subset both databases speak; this module binds values, runs
//! statements in one transaction, and returns rows as [`Value`]s.
//!
//! Both schemas come from migrations (`harness/migrations/{sqlite,postgres}`) run by
//! refinery when the history opens. On PostgreSQL they run under an advisory lock, so runners
//! that start at the same moment do not race to create the tables.
//!
//! The PostgreSQL client (tokio-postgres) lives on a thread of its own with its own
//! runtime: the history's callers are synchronous (reporters, the CLI) and may themselves be
//! inside a tokio runtime, where blocking on another runtime is not allowed.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

mod sqlite_migrations {
    refinery::embed_migrations!("migrations/sqlite");
}
mod postgres_migrations {
    refinery::embed_migrations!("migrations/postgres");
}

/// Key of the advisory lock held while PostgreSQL migrations run ("shakedwn" in ASCII).
const MIGRATION_LOCK: i64 = 0x7368_616b_6564_776e;

/// Where a history is: a file, or a PostgreSQL URL (`postgres://` or `postgresql://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Postgres(String),
}

impl Location {
    /// A `--history` value or `$SHAKEDOWN_HISTORY`: a URL selects PostgreSQL, anything else
    /// is a file path.
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::File(PathBuf::from(s))
        }
    }

    /// How the location is shown in messages: the path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Location::File(p) => p.display().to_string(),
            Location::Postgres(url) => redact(url),
        }
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Location {
        Location::File(p)
    }
}

impl From<&PathBuf> for Location {
    fn from(p: &PathBuf) -> Location {
        Location::File(p.clone())
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Location {
        Location::File(p.to_path_buf())
    }
}

/// `postgres://user@host:port/db`, built from the parsed URL so that no password (or any
/// other option) reaches a log line.
pub fn redact(url: &str) -> String {
    let Ok(c) = url.parse::<tokio_postgres::Config>() else {
        return "postgres://(an unparsable URL)".into();
    };
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .zip(c.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
            tokio_postgres::config::Host::Unix(d) => format!("{}:{p}", d.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        c.get_dbname().unwrap_or("")
    )
}

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("failed to migrate the history's schema")]
    Migrate(#[from] refinery::Error),
    #[error("failed to lock {path} while migrating the history's schema")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start a runtime for the PostgreSQL client")]
    Runtime(#[source] std::io::Error),
    #[error("failed to start the PostgreSQL client's thread")]
    Thread(#[source] std::io::Error),
    #[error("failed to reach the PostgreSQL client's thread: it has stopped")]
    Gone,
}

/// One bound value or one column of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

/// `vals![a, b, c]`: a statement's values.
macro_rules! vals {
    ($($v:expr),* $(,)?) => { vec![$($crate::history::store::Value::from($v)),*] };
}
pub(crate) use vals;

/// A row read back: columns by index, in the types both databases agree on. A column of
/// the wrong type reads as its zero value; the schema fixes every column's type.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> &Value {
        self.0.get(i).unwrap_or(&Value::Null)
    }
    pub fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }
    pub fn opt_text(&self, i: usize) -> Option<String> {
        match self.at(i) {
            Value::Text(s) => Some(s.clone()),
            Value::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }
    pub fn int(&self, i: usize) -> i64 {
        match self.at(i) {
            Value::Int(n) => *n,
            Value::Bool(b) => *b as i64,
            _ => 0,
        }
    }
    /// SQLite keeps booleans as integers, PostgreSQL as booleans.
    pub fn bool(&self, i: usize) -> bool {
        self.int(i) != 0
    }
}

/// One statement of a transaction.
pub struct Stmt {
    pub sql: String,
    pub values: Vec<Value>,
}

impl Stmt {
    pub fn new(sql: impl Into<String>, values: Vec<Value>) -> Stmt {
        Stmt {
            sql: sql.into(),
            values,
        }
    }
}

/// An open history database.
pub enum Store {
    Sqlite(rusqlite::Connection),
    Postgres(Postgres),
}

impl Store {
    /// Opens (creating) a SQLite file and migrates it.
    pub fn sqlite(path: &Path, create: bool) -> Result<Store, DbError> {
        use rusqlite::OpenFlags;
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let mut conn = rusqlite::Connection::open_with_flags(path, flags)?;
        // Jobs of several branches may finish at once and share one file.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // refinery reads which migrations ran, then applies the rest: two runs opening a new
        // file at once would both apply the first. A lock beside the file orders them.
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .and_then(|f| {
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
                    .map_err(|(_, e)| std::io::Error::from(e))
            })
            .map_err(|source| DbError::Lock {
                path: lock_path,
                source,
            })?;
        let migrated = sqlite_migrations::migrations::runner().run(&mut conn);
        drop(lock);
        migrated?;
        Ok(Store::Sqlite(conn))
    }

    /// Connects to PostgreSQL and migrates the database.
    pub fn postgres(url: &str) -> Result<Store, DbError> {
        Postgres::connect(url).map(Store::Postgres)
    }

    /// The rows of one query.
    pub fn query(&self, sql: &str, values: Vec<Value>) -> Result<Vec<Row>, DbError> {
        match self {
            Store::Sqlite(c) => {
                let mut st = c.prepare(sql)?;
                let n = st.column_count();
                let rows = st.query_map(rusqlite::params_from_iter(values.iter()), |r| {
                    (0..n).map(|i| r.get_ref(i).map(sqlite_value)).collect()
                })?;
                Ok(rows.map(|r| r.map(Row)).collect::<Result<_, _>>()?)
            }
            Store::Postgres(p) => p.query(postgres_sql(sql), values),
        }
    }

    /// Runs every statement in one transaction: all of them or none.
    pub fn transaction(&self, stmts: Vec<Stmt>) -> Result<(), DbError> {
        match self {
            Store::Sqlite(c) => {
                // Unchecked: the history never nests transactions.
                let tx = c.unchecked_transaction()?;
                for s in &stmts {
                    tx.execute(&s.sql, rusqlite::params_from_iter(s.values.iter()))?;
                }
                Ok(tx.commit()?)
            }
            Store::Postgres(p) => p.transaction(
                stmts
                    .into_iter()
                    .map(|s| Stmt::new(postgres_sql(&s.sql), s.values))
                    .collect(),
            ),
        }
    }
}

fn sqlite_value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        ValueRef::Real(f) => Value::Int(f as i64),
        ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(String::from_utf8_lossy(t).into()),
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(n) => ToSqlOutput::Borrowed(ValueRef::Integer(*n)),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(*b as i64)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

/// `?1` → `$1`: the one placeholder spelling that differs. The history's SQL has no `?`
/// anywhere else.
fn postgres_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl tokio_postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use tokio_postgres::types::{IsNull, Type};
        match self {
            Value::Null => Ok(IsNull::Yes),
            // PostgreSQL's text cannot hold NUL, which SQLite stores; a diagnosis quoting
            // a binary log must not lose the whole run.
            Value::Text(s) if s.contains('\0') => s.replace('\0', "\u{fffd}").to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Bool(b) if *ty == Type::BOOL => b.to_sql(ty, out),
            Value::Bool(b) => Value::Int(*b as i64).to_sql(ty, out),
            Value::Int(n) if *ty == Type::BOOL => (*n != 0).to_sql(ty, out),
            Value::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            Value::Int(n) => n.to_sql(ty, out),
        }
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

fn postgres_row(r: &tokio_postgres::Row) -> Result<Row, tokio_postgres::Error> {
    use tokio_postgres::types::Type;
    let mut out = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.into()
        } else if *t == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.into()
        } else if *t == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?.map(i64::from).into()
        } else if *t == Type::INT2 {
            r.try_get::<_, Option<i16>>(i)?.map(i64::from).into()
        } else {
            r.try_get::<_, Option<String>>(i)?.into()
        };
        out.push(v);
    }
    Ok(Row(out))
}

type Reply<T> = mpsc::Sender<Result<T, DbError>>;

enum Request {
    Query(String, Vec<Value>, Reply<Vec<Row>>),
    Transaction(Vec<Stmt>, Reply<()>),
}

/// A PostgreSQL connection served by a thread of its own (see the module docs). Dropping it
/// ends the thread and closes the connection.
pub struct Postgres {
    requests: mpsc::Sender<Request>,
}

impl Postgres {
    fn connect(url: &str) -> Result<Postgres, DbError> {
        let (requests, incoming) = mpsc::channel::<Request>();
        let (ready, started) = mpsc::channel::<Result<(), DbError>>();
        let url = url.to_string();
        std::thread::Builder::new()
            .name("history-postgres".into())
            .spawn(move || serve(&url, incoming, ready))
            .map_err(DbError::Thread)?;
        started.recv().map_err(|_| DbError::Gone)??;
        Ok(Postgres { requests })
    }

    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, DbError> {
        let (tx, rx) = mpsc::channel();
        self.requests.send(make(tx)).map_err(|_| DbError::Gone)?;
        rx.recv().map_err(|_| DbError::Gone)?
    }

    fn query(&self, sql: String, values: Vec<Value>) -> Result<Vec<Row>, DbError> {
        self.ask(|r| Request::Query(sql, values, r))
    }

    fn transaction(&self, stmts: Vec<Stmt>) -> Result<(), DbError> {
        self.ask(|r| Request::Transaction(stmts, r))
    }
}

fn params(values: &[Value]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// The client's thread: connect, migrate under the advisory lock, then answer requests
/// until the [`Postgres`] handle is dropped.
fn serve(url: &str, incoming: mpsc::Receiver<Request>, ready: Reply<()>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(DbError::Runtime(e)));
            return;
        }
    };
    let client = rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!("history: the PostgreSQL connection ended: {e}");
            }
        });
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let migrated = postgres_migrations::migrations::runner()
            .run_async(&mut client)
            .await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await;
        migrated?;
        unlocked?;
        Ok::<_, DbError>(client)
    });
    let mut client = match client {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while let Ok(req) = incoming.recv() {
        match req {
            Request::Query(sql, values, reply) => {
                let r = rt.block_on(async {
                    let rows = client.query(sql.as_str(), &params(&values)).await?;
                    rows.iter().map(postgres_row).collect::<Result<_, _>>()
                });
                let _ = reply.send(r.map_err(DbError::from));
            }
            Request::Transaction(stmts, reply) => {
                let r = rt.block_on(async {
                    let tx = client.transaction().await?;
                    for s in &stmts {
                        tx.execute(s.sql.as_str(), &params(&s.values)).await?;
                    }
                    tx.commit().await
                });
                let _ = reply.send(r.map_err(DbError::from));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_postgres_and_lose_their_password_in_messages() {
        let l = Location::parse("postgres://ci:s3cret@db.example:6543/history?sslmode=disable");
        assert!(matches!(l, Location::Postgres(_)));
        let shown = l.display();
        assert_eq!(shown, "postgres://ci@db.example:6543/history");
        assert!(!shown.contains("s3cret"));
        assert_eq!(
            Location::parse("postgresql://u@h/d").display(),
            "postgres://u@h:5432/d"
        );
        assert_eq!(
            Location::parse("artifacts/history.sqlite"),
            Location::File("artifacts/history.sqlite".into())
        );
    }

    #[test]
    fn placeholders_are_renumbered_for_postgres_only_where_numbered() {
        assert_eq!(
            postgres_sql("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '?'"
        );
    }

    #[test]
    fn sqlite_store_round_trips_values_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::sqlite(&dir.path().join("h.sqlite"), true).unwrap();
        s.transaction(vec![Stmt::new(
            "INSERT INTO runs (run_id, scenario, version, trigger, dry_run, started, duration_ms, \
             exit, exit_code, stopped, conformance_enabled, conformance_note) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            vals![
                "r1",
                "release-1.20",
                "v1.20.2",
                "manual",
                true,
                7i64,
                9i64,
                "passed",
                0i64,
                None::<String>,
                false,
                "off"
            ],
        )])
        .unwrap();
        let rows = s
            .query(
                "SELECT run_id, dry_run, started, stopped, conformance_enabled FROM runs WHERE run_id = ?1",
                vals!["r1"],
            )
            .unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.text(0), r.bool(1), r.int(2)), ("r1".into(), true, 7));
        assert_eq!((r.opt_text(3), r.bool(4)), (None, false));
        // A failing statement rolls the whole transaction back.
        let err = s.transaction(vec![
            Stmt::new("DELETE FROM runs WHERE run_id = ?1", vals!["r1"]),
            Stmt::new("INSERT INTO nowhere VALUES (1)", vec![]),
        ]);
        assert!(err.is_err());
        assert_eq!(s.query("SELECT run_id FROM runs", vec![]).unwrap().len(), 1);
    }
}
