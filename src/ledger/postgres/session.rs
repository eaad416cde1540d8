//! One PostgreSQL connection with the settings a fenced ledger needs: a statement, lock and
//! idle-in-transaction timeout on the server (without the last, a leader stopped inside a
//! transaction holds its row locks, and the takeover waits, forever), TCP keepalives and a
//! connect timeout on the client. The connection's driver task lives as long as the session.

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
}

/// An open connection and its driver task.
pub struct Session {
    /// The client half; statements go through it.
    pub client: Client,
    driver: tokio::task::JoinHandle<()>,
    /// Where it connects (it may hold a password: never shown), to connect again.
    url: crate::secret::Secret,
    timeouts: SessionTimeouts,
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
        let target = describe(&config);
        let failed = |source| SessionError::Connect {
            target: target.clone(),
            source,
        };
        let (client, driver) = match mode {
            super::tls::Mode::Plain => {
                let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
                (client, drive(connection, target.clone()))
            }
            tls => {
                let connector =
                    super::tls::connector(&tls).map_err(|why| SessionError::Tls { why })?;
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let (client, connection) = config.connect(connector).await.map_err(failed)?;
                (client, drive(connection, target.clone()))
            }
        };
        Ok(Session {
            client,
            driver,
            url: crate::secret::Secret::new(url),
            timeouts,
        })
    }

    /// Connects again (after the server ended the connection, or restarted).
    pub async fn reconnect(&mut self) -> Result<(), SessionError> {
        let fresh = Session::connect(self.url.expose(), self.timeouts).await?;
        *self = fresh;
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
