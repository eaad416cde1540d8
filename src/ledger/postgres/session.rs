//! One PostgreSQL connection with the settings a fenced ledger needs: a statement, lock and
//! idle-in-transaction timeout on the server (without the last, a leader stopped inside a
//! transaction holds its row locks, and the takeover waits, forever), TCP keepalives and a
//! connect timeout on the client ([`Target`]: every connection, the pool's too, is made from
//! it). A [`Session`] is a connection of its own (the lease's); its driver task lives as long
//! as it does.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// The timeouts of a session. Defaults: docs/configuration.md, `[ledger]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// Longest a connection attempt may take.
    pub connect: Duration,
    /// Longest one statement may run on the server.
    pub statement: Duration,
    /// Longest a statement waits for a lock.
    pub lock: Duration,
    /// Longest a transaction may sit idle before the server ends the session (and its locks).
    pub idle_in_transaction: Duration,
    /// Idle time before TCP keepalives start (TCP connections only).
    pub keepalives_idle: Duration,
    /// Longest unacknowledged data may wait before the kernel drops the connection
    /// (`TCP_USER_TIMEOUT`; TCP only): a peer gone mid-request is noticed in this long.
    pub tcp_user: Duration,
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        SessionTimeouts {
            connect: Duration::from_secs(5),
            statement: Duration::from_secs(15),
            lock: Duration::from_secs(5),
            idle_in_transaction: Duration::from_secs(10),
            keepalives_idle: Duration::from_secs(10),
            tcp_user: Duration::from_secs(20),
        }
    }
}

/// Why a session could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The connection string does not parse.
    #[error(
        "the ledger's database URL does not parse: {source} — give libpq key=value pairs (host=/run/postgresql dbname=ecs_renewd user=ecs_renewd) or a postgresql:// URI"
    )]
    Url {
        /// The parser's error (it names the key, never the password's value).
        #[source]
        source: tokio_postgres::Error,
    },
    /// The URL's TLS settings cannot be used (an unknown `sslmode`, an unreadable root file).
    #[error("the ledger's database URL: {why}")]
    Tls {
        /// What is wrong (names the setting and file, never the password).
        why: String,
    },
    /// The server could not be reached, or refused the login.
    #[error(
        "cannot connect to the ledger's database ({target}): {source} — check that PostgreSQL runs and accepts this user, and the URL's host, port and dbname"
    )]
    Connect {
        /// Where it was trying to connect: hosts and ports, never the password.
        target: String,
        /// The client's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The pool had no session to give (every one busy, or connecting took too long).
    #[error("no session of the ledger's database ({target}): {why}")]
    Pool {
        /// Where it was trying to connect: hosts and ports, never the password.
        target: String,
        /// What happened, and what to do.
        why: String,
    },
}

/// Where and how every connection to the ledger's database is made: the parsed URL with the
/// session settings, and its TLS connector. Made once, so a bad URL or root file is reported
/// when the ledger opens, and connecting again can only fail for the server's reasons.
#[derive(Clone)]
pub struct Target {
    /// The parsed URL; it may hold a password, so `Target` is never shown whole.
    config: tokio_postgres::Config,
    /// The TLS connector when the URL's `sslmode` asks for TLS.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Hosts and ports, never the password, for messages.
    described: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("at", &self.described)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Reads `url` (its `sslmode` and `sslrootcert` too) and sets `timeouts` and the
    /// `application_name` ecs-renewd on every connection made from it.
    pub fn new(url: &str, timeouts: SessionTimeouts) -> Result<Target, SessionError> {
        let (rest, mode) = super::tls::split(url).map_err(|why| SessionError::Tls { why })?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|source| SessionError::Url { source })?;
        let ms = |d: Duration| d.as_millis();
        config
            .application_name("ecs-renewd")
            .connect_timeout(timeouts.connect)
            .keepalives(true)
            .keepalives_idle(timeouts.keepalives_idle)
            .tcp_user_timeout(timeouts.tcp_user)
            .options(format!(
                "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={} -c client_min_messages=warning",
                ms(timeouts.statement),
                ms(timeouts.lock),
                ms(timeouts.idle_in_transaction)
            ));
        let tls = match mode {
            super::tls::Mode::Plain => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
            tls => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(super::tls::connector(&tls).map_err(|why| SessionError::Tls { why })?)
            }
        };
        let described = describe(&config);
        Ok(Target {
            config,
            tls,
            described,
        })
    }

    /// Where it connects: hosts and ports, never the password.
    pub fn described(&self) -> &str {
        &self.described
    }

    /// Opens a connection, its driver spawned on the current runtime; the driver ends when
    /// the client is dropped.
    pub async fn connect(
        &self,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let target = self.described.clone();
        Ok(match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                (client, drive(connection, target))
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                (client, drive(connection, target))
            }
        })
    }

    /// [`Target::connect`], its failure said with where and what to check.
    async fn session(&self) -> Result<(Client, tokio::task::JoinHandle<()>), SessionError> {
        self.connect()
            .await
            .map_err(|source| SessionError::Connect {
                target: self.described.clone(),
                source,
            })
    }
}

/// An open connection of its own (the lease's, a copy's), and its driver task.
pub struct Session {
    /// The client half; statements go through it.
    pub client: Client,
    driver: tokio::task::JoinHandle<()>,
    /// Where it connects, to connect again.
    target: Target,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Session {
    /// Connects to `url` with `timeouts`, as `application_name` ecs-renewd; over TLS when its
    /// `sslmode` asks (`tls`).
    pub async fn connect(url: &str, timeouts: SessionTimeouts) -> Result<Session, SessionError> {
        Session::to(Target::new(url, timeouts)?).await
    }

    /// Connects to `target`.
    pub async fn to(target: Target) -> Result<Session, SessionError> {
        let (client, driver) = target.session().await?;
        Ok(Session {
            client,
            driver,
            target,
        })
    }

    /// Connects again (after the server ended the connection, or restarted).
    pub async fn reconnect(&mut self) -> Result<(), SessionError> {
        let (client, driver) = self.target.session().await?;
        self.driver.abort();
        self.client = client;
        self.driver = driver;
        Ok(())
    }
}

/// Runs a connection's driver until it ends (it ends when its client is dropped).
fn drive<S, T>(
    connection: tokio_postgres::Connection<S, T>,
    target: String,
) -> tokio::task::JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%target, "the ledger's database connection ended: {error}");
        }
    })
}

/// Where `url` points (hosts and ports, never its password), for messages.
pub fn target(url: &str) -> Result<String, SessionError> {
    let (rest, _) = super::tls::split(url).map_err(|why| SessionError::Tls { why })?;
    let config: tokio_postgres::Config = rest
        .parse()
        .map_err(|source| SessionError::Url { source })?;
    Ok(describe(&config))
}

/// The hosts and ports of `config`, for messages: never its password.
fn describe(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(path) => {
                    format!("{}/.s.PGSQL.{port}", path.display())
                }
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
