//! A real PostgreSQL for the tests that need one, never a mock. `.ci/run` starts a throwaway
//! cluster and names it in `ECS_RENEWD_TEST_POSTGRES` (libpq key=value, e.g. `host=/tmp/x
//! port=54329 user=postgres`); without it, the first test that asks starts one itself from the
//! installed binaries (`initdb` + `postgres`, unix socket in a temp dir, as the `postgres`
//! user when run as root), killed when the test process ends. No server and none to start is a
//! failure, never a skip. Each test gets a database of its own.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The environment variable naming a running server.
pub const SERVER_VAR: &str = "ECS_RENEWD_TEST_POSTGRES";

/// The server every test of this process uses: its libpq connection string, no dbname.
fn server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| match std::env::var(SERVER_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => start_throwaway().unwrap_or_else(|why| {
            panic!(
                "these tests need PostgreSQL: {why} — install it (apt-get install -y postgresql-15) or set {SERVER_VAR} to a server's libpq string (.ci/run does both)"
            )
        }),
    })
}

/// A fresh, empty database on the server: its connection string.
pub async fn fresh_database() -> String {
    database_on(server()).await
}

/// A fresh, empty database on the server at `base` (a libpq string without dbname).
pub async fn database_on(base: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let (client, connection) =
        tokio_postgres::connect(&format!("{base} dbname=postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at {base:?} ({SERVER_VAR}) does not answer: {e}")
            });
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    format!("{base} dbname={name}")
}

/// The directory of `initdb` and `postgres`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no /usr/lib/postgresql ({e}) and no pg_config"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql".into())
}

/// The uid and gid to run the server as: the `postgres` user when this process is root
/// (PostgreSQL refuses to run as root), else none.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the record is read at once, before any other
    // call that could overwrite it.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err("running as root and there is no postgres user to run the server as".into());
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

fn command(program: &Path, user: Option<(u32, u32)>, pdeathsig: bool) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = user
                && (libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            if pdeathsig && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Removes the clusters of earlier test processes: each is killed with its process, and
/// leaves its directory behind. Only directories over an hour old whose server is gone.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
        let ours = entry
            .file_name()
            .to_string_lossy()
            .starts_with("ecs-renewd-pg-");
        let running = std::fs::read_to_string(path.join("data/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
            // SAFETY: kill with signal 0 only checks that the process exists.
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if ours && old && !running {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Starts a throwaway cluster; its connection string once it accepts connections.
fn start_throwaway() -> Result<String, String> {
    let cluster = Cluster::start()?;
    let url = cluster.url();
    // The shared server lives as long as the test process (it is killed with it).
    std::mem::forget(cluster);
    Ok(url)
}

/// A cluster of one test's own, which it may stop and start again (the failover tests take the
/// database away); killed with the test process, or when dropped.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    /// The running server's pid (0 when stopped).
    pid: i32,
    /// The loopback TCP port it also listens on, with TLS (`start_tls`).
    tls_port: Option<u16>,
}

impl Cluster {
    /// initdb and start, on a unix socket in a temp dir.
    pub fn start() -> Result<Cluster, String> {
        Cluster::init(None)
    }

    /// [`Cluster::start`], also listening on a loopback TCP port with TLS: `cert` and `key`
    /// are the server's PEM certificate and key.
    pub fn start_tls(cert: &Path, key: &Path) -> Result<Cluster, String> {
        Cluster::init(Some((cert, key)))
    }

    fn init(tls: Option<(&Path, &Path)>) -> Result<Cluster, String> {
        remove_stale_clusters();
        let bin = bin_dir()?;
        let user = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("ecs-renewd-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            .keep();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown: {e}"))?;
        }
        let out = command(&bin.join("initdb"), user, false)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(dir.join("data"))
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut tls_port = None;
        if let Some((cert, key)) = tls {
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = dir.join("data").join(name);
                std::fs::copy(from, &to).map_err(|e| format!("{name}: {e}"))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("{name}: {e}"))?;
                if let Some((uid, gid)) = user {
                    std::os::unix::fs::chown(&to, Some(uid), Some(gid))
                        .map_err(|e| format!("chown {name}: {e}"))?;
                }
            }
            // A loopback port free at the time of asking.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("a free port: {e}"))?
                .port();
            tls_port = Some(port);
        }
        let mut cluster = Cluster {
            dir,
            bin,
            user,
            pid: 0,
            tls_port,
        };
        cluster.run()?;
        Ok(cluster)
    }

    /// Its connection string (no dbname).
    pub fn url(&self) -> String {
        format!(
            "host={} port={} user=postgres",
            self.dir.display(),
            self.tls_port.unwrap_or(5432)
        )
    }

    /// Its TLS port on 127.0.0.1 (`start_tls`).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// Stops the server at once, as a crash or `pg_ctl stop -m immediate` would (SIGQUIT),
    /// and waits until it is gone.
    pub fn stop_immediate(&mut self) {
        if self.pid == 0 {
            return;
        }
        // SAFETY: kill(2) on the server this cluster started.
        unsafe { libc::kill(self.pid, libc::SIGQUIT) };
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(self.pid, 0) } == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.pid = 0;
    }

    /// Starts the server again on the same data; returns once it accepts connections.
    pub fn restart(&mut self) -> Result<(), String> {
        self.run()
    }

    fn run(&mut self) -> Result<(), String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (bin, user, data, socket_dir) = (
            self.bin.clone(),
            self.user,
            self.dir.join("data"),
            self.dir.clone(),
        );
        let listen: Vec<String> = match self.tls_port {
            None => vec![
                "-c".into(),
                "listen_addresses=".into(),
                "-p".into(),
                "5432".into(),
            ],
            Some(port) => vec![
                "-c".into(),
                "listen_addresses=127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-c".into(),
                "ssl=on".into(),
            ],
        };
        // The server is the child of a thread that lives as long as the server: the kernel's
        // parent-death signal follows the thread that spawned it, so this one must not end
        // first.
        std::thread::spawn(move || {
            let spawned = command(&bin.join("postgres"), user, true)
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(&socket_dir)
                .args(&listen)
                .args(["-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("postgres: {e}")));
                    return;
                }
            };
            let pid = child.id() as i32;
            let mut log = Vec::new();
            let mut ready = Some(ready_tx);
            for line in BufReader::new(child.stderr.take().unwrap()).lines() {
                let Ok(line) = line else { break };
                if line.contains("ready to accept connections")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(Ok(pid));
                }
                log.push(line);
            }
            if let Some(tx) = ready {
                let _ = tx.send(Err(format!("postgres exited: {}", log.join("\n"))));
            }
            let _ = child.wait();
        });
        self.pid = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| "postgres did not become ready within 60 s".to_string())??;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
