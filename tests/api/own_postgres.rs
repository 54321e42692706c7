//! Servers a test starts for itself and stops by its own handle, never the machine's shared
//! PostgreSQL: a second PostgreSQL cluster (TLS only, with a CA made for the test) and a
//! PgBouncer in transaction mode in front of the shared PostgreSQL.
//!
//! Both come from Debian's packages (`postgresql`, `pgbouncer`; `.ci/run` installs them when
//! missing). Without them a test is skipped with a printed notice, except under `CI=true`,
//! where a missing program fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `None` and a notice when `program` is missing outside CI; a failure under `CI=true`.
fn required(program: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    if program.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{what} is missing, and CI=true: .ci/run installs it");
        }
        eprintln!("NOTICE: {what} is missing: this test is skipped (install Debian's package)");
    }
    program
}

/// The newest Debian PostgreSQL's `bin/NAME`, or `NAME` on the PATH.
fn postgres_program(name: &str) -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.exists())
        .or_else(|| on_path(name))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
}

/// PostgreSQL and PgBouncer refuse to run as root: as root, a program runs as `postgres`
/// (set on the child itself, so its process id is the server's own).
fn as_server_user(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    // The test's working directory may be closed to the server user.
    cmd.current_dir(std::env::temp_dir());
    if is_root() {
        use std::os::unix::process::CommandExt;
        cmd.uid(id_of("-u")).gid(id_of("-g"));
    }
    cmd
}

/// `id FLAG postgres`: the server user's uid or gid.
fn id_of(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a `postgres` user is needed to run PostgreSQL as root")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A directory of the test's own that the server user can write (removed on drop).
struct ServerDir(PathBuf);

impl ServerDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-{what}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Hands everything in it to the server user (when running as root).
    fn give_away(&self) {
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.0)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown to postgres failed");
        }
    }
}

impl Drop for ServerDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A certificate authority made for one test, and a server certificate it signed.
pub struct TestCa {
    /// The CA's certificate (PEM).
    pub ca_pem: String,
    /// The server's certificate (PEM), for `localhost` only (not `127.0.0.1`).
    pub cert_pem: String,
    /// The server's private key (PEM).
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        Self {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A PostgreSQL cluster of the test's own on a free port, accepting TLS connections only
/// (`hostssl` lines alone in `pg_hba.conf`), user `postgres` with trust authentication.
/// Stopped (`pg_ctl -D <its data> stop`) and removed on drop.
pub struct OwnCluster {
    pub port: u16,
    pg_ctl: PathBuf,
    data: PathBuf,
    dir: ServerDir,
}

impl OwnCluster {
    /// Makes and starts one whose certificate `ca` signed; `None` when PostgreSQL's programs
    /// are missing outside CI.
    pub fn start_tls_only(ca: &TestCa) -> Option<Self> {
        let initdb = required(postgres_program("initdb"), "PostgreSQL's initdb")?;
        let pg_ctl = required(postgres_program("pg_ctl"), "PostgreSQL's pg_ctl")?;
        let dir = ServerDir::new("pgtls");
        let data = dir.0.join("data");
        dir.give_away();
        let out = as_server_user(&initdb)
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
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(data.join("server.crt"), &ca.cert_pem).unwrap();
        std::fs::write(data.join("server.key"), &ca.key_pem).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
        )
        .unwrap();
        let mut cluster = OwnCluster {
            port: 0,
            pg_ctl,
            data,
            dir,
        };
        for _ in 0..5 {
            cluster.port = free_port();
            let conf = format!(
                "{}\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
                 ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
                 fsync = off\nmax_connections = 60\n",
                std::fs::read_to_string(cluster.data.join("postgresql.conf")).unwrap(),
                cluster.port,
                cluster.dir.0.display(),
            );
            std::fs::write(cluster.data.join("postgresql.auto.conf"), conf).unwrap();
            cluster.dir.give_away();
            let key = cluster.data.join("server.key");
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let log = cluster.dir.0.join("postgres.log");
            let started = as_server_user(&cluster.pg_ctl)
                .args(["-w", "-t", "60", "-l"])
                .arg(&log)
                .arg("-D")
                .arg(&cluster.data)
                .arg("start")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if started {
                return Some(cluster);
            }
            // Most likely the port was taken in between: try another.
            eprintln!(
                "own PostgreSQL did not start on {}: {}",
                cluster.port,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("own PostgreSQL did not start on any of five free ports");
    }

    /// A URL to database `postgres` on this cluster, as user `postgres`, with `query` appended.
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    /// The folder files for the test may go in (a CA file, say).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = as_server_user(&self.pg_ctl)
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A PgBouncer of the test's own in transaction mode, in front of the PostgreSQL server of
/// `upstream` (any database name passes through), with `pool_size` server connections per
/// database and user. Killed (its own process) on drop.
pub struct OwnPgBouncer {
    pub port: u16,
    child: Child,
    _dir: ServerDir,
}

impl OwnPgBouncer {
    /// `None` when pgbouncer is missing outside CI.
    pub fn start(upstream: &str, pool_size: u32) -> Option<Self> {
        let program = required(
            on_path("pgbouncer")
                .or_else(|| Some(PathBuf::from("/usr/sbin/pgbouncer")).filter(|p| p.exists())),
            "pgbouncer",
        )?;
        let up = url::Url::parse(upstream).unwrap();
        let user = if up.username().is_empty() {
            "postgres"
        } else {
            up.username()
        };
        for _ in 0..5 {
            let dir = ServerDir::new("pgbouncer");
            let port = free_port();
            std::fs::write(dir.0.join("users.txt"), format!("\"{user}\" \"\"\n")).unwrap();
            let ini = format!(
                "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {}\n\
                 pool_mode = transaction\ndefault_pool_size = {pool_size}\n\
                 max_client_conn = 1000\nignore_startup_parameters = extra_float_digits\n\
                 logfile = {}\n",
                up.host_str().unwrap_or("127.0.0.1"),
                up.port().unwrap_or(5432),
                dir.0.join("users.txt").display(),
                dir.0.join("pgbouncer.log").display(),
            );
            let config = dir.0.join("pgbouncer.ini");
            std::fs::write(&config, ini).unwrap();
            dir.give_away();
            let mut child = as_server_user(&program)
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Self {
                        port,
                        child,
                        _dir: dir,
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "own pgbouncer did not start on {port}: {}",
                std::fs::read_to_string(dir.0.join("pgbouncer.log")).unwrap_or_default()
            );
        }
        panic!("own pgbouncer did not start on any of five free ports");
    }

    /// `url` (a PostgreSQL URL) with its host and port replaced by this PgBouncer's.
    pub fn in_front_of(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).unwrap();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }
}

impl Drop for OwnPgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
