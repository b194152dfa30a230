//! A PostgreSQL server for tests: [`test_postgres`] hands each caller a fresh, empty
//! database, so tests that need PostgreSQL run in parallel without seeing each other.
//!
//! Where the server comes from:
//! - `HOLDLESS_TEST_POSTGRES` set: that server (a URL such as
//!   `postgres://user:pass@host:5432/postgres`; the user must be allowed to
//!   `CREATE DATABASE`). Nothing is started.
//! - otherwise one private cluster per test process, started on first use with the
//!   machine's PostgreSQL server binaries (`HOLDLESS_PG_BIN`, else the newest
//!   `/usr/lib/postgresql/*/bin`, else `PATH`): `initdb` into a temp dir, then `postgres`
//!   on a random loopback port with its socket in the same dir. `initdb` refuses to run
//!   as root, so as root both run as `postgres` (or `nobody` when there is no such user)
//!   through `setpriv`, with the dir handed to that user. The cluster trades durability
//!   for speed (`fsync=off`): tests check what the store acknowledges and what a
//!   reopened store reads back, not what survives a power loss.
//!
//! The server runs under a small `sh` supervisor that holds the read end of a pipe whose
//! write end this process keeps open until it exits: when the test process ends, however
//! it ends, the pipe closes, the supervisor stops the server (fast shutdown) and deletes
//! the dir. `pg_ctl start` would detach the server and leave it running.
//!
//! Missing binaries fail the test with an install hint rather than skipping it: a
//! conformance suite that silently does not run proves nothing.

use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::OnceCell;

use super::postgres::admin;

/// How long a freshly started cluster may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(60);

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, postgres) were not found: \
     install them (Debian: `apt-get install postgresql`), point HOLDLESS_PG_BIN at their \
     directory, or set HOLDLESS_TEST_POSTGRES to the URL of a server where the user may \
     CREATE DATABASE";

/// A running private cluster.
struct Cluster {
    /// `postgres://holdless@127.0.0.1:PORT/postgres`.
    admin_url: String,
    /// initdb's data dir and the socket live here; the server logs to `server.log`.
    dir: PathBuf,
    /// Kept open for the life of the process; its closing stops the cluster.
    _lifeline: Mutex<ChildStdin>,
}

static SERVER: OnceCell<Result<String, String>> = OnceCell::const_new();
static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

/// The URL of a fresh, empty database on the test server (see the module docs).
/// Panics with a clear message when no server can be had.
pub async fn test_postgres() -> String {
    let base = SERVER
        .get_or_init(|| async {
            match std::env::var("HOLDLESS_TEST_POSTGRES") {
                Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_string()),
                _ => start_cluster().await,
            }
        })
        .await;
    let base = match base {
        Ok(url) => url,
        Err(e) => panic!("no PostgreSQL for tests: {e}"),
    };
    let name = format!(
        "holdless_t_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    if let Err(e) = admin::create_database(base, &name).await {
        panic!("creating test database {name} on {base}: {e}");
    }
    match with_database(base, &name) {
        Ok(url) => url,
        Err(e) => panic!("{e}"),
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "HOLDLESS_TEST_POSTGRES must be a URL like postgres://user@host:port/db, not {url:?}"
        )
    };
    let scheme_end = url.find("://").ok_or_else(bad)? + 3;
    let rest = &url[scheme_end..];
    let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
    let after_authority = &rest[authority_len..];
    let query = after_authority
        .find('?')
        .map(|i| &after_authority[i..])
        .unwrap_or("");
    Ok(format!(
        "{}{}/{name}{query}",
        &url[..scheme_end],
        &rest[..authority_len]
    ))
}

async fn start_cluster() -> Result<String, String> {
    let cluster = CLUSTER
        .get_or_try_init(|| async {
            let cluster = tokio::task::spawn_blocking(spawn_cluster)
                .await
                .map_err(|e| format!("cluster start-up task failed: {e}"))??;
            if let Err(e) = admin::wait_ready(&cluster.admin_url, START_LIMIT).await {
                let log =
                    std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default();
                return Err(format!(
                    "the test cluster did not accept connections within {START_LIMIT:?}: \
                     {e}\n{log}"
                ));
            }
            Ok(cluster)
        })
        .await?;
    Ok(cluster.admin_url.clone())
}

/// The directory holding `initdb` and `postgres`.
fn bin_dir() -> Result<PathBuf, String> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(dir) = std::env::var("HOLDLESS_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "HOLDLESS_PG_BIN={} holds no initdb and postgres",
                dir.display()
            ))
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| has(d))
        .ok_or_else(|| INSTALL_HINT.to_string())
}

/// The effective user id, from `/proc/self/status`.
fn euid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The unprivileged user (and its primary group id) to run the cluster as when we are
/// root.
fn cluster_user() -> Result<(String, String), String> {
    for user in ["postgres", "nobody"] {
        let out = Command::new("id").arg("-g").arg(user).output();
        if let Ok(out) = out {
            let gid = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !gid.is_empty() {
                return Ok((user.to_string(), gid));
            }
        }
    }
    Err("running as root, and neither user postgres nor nobody exists to run the cluster".into())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Runs `initdb` and starts the server under its supervisor (blocking).
fn spawn_cluster() -> Result<Cluster, String> {
    let bin = bin_dir()?;
    let dir = tempfile::Builder::new()
        .prefix("holdless-pg-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        .keep();
    let data = dir.join("data");
    // As root, every command is prefixed with a setpriv that drops to the user.
    let mut prefix: Vec<String> = Vec::new();
    if euid() == Some(0) {
        let (user, gid) = cluster_user()?;
        let status = Command::new("chown")
            .arg(format!("{user}:"))
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err(format!("chown {user} {} failed", dir.display()));
        }
        prefix = [
            "setpriv",
            "--reuid",
            &user,
            "--regid",
            &gid,
            "--init-groups",
            "--",
        ]
        .map(String::from)
        .to_vec();
    }
    let initdb = bin.join("initdb");
    let out = Command::new(prefix.first().map(PathBuf::from).unwrap_or(initdb.clone()))
        .args(prefix.iter().skip(1))
        .args(if prefix.is_empty() {
            None
        } else {
            Some(&initdb)
        })
        .args(["--username=holdless", "--auth=trust", "--no-sync"])
        .args(["--encoding=UTF8", "--locale=C", "-D"])
        .arg(&data)
        .output()
        .map_err(|e| format!("running {}: {e}", initdb.display()))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port()?;
    let postgres = bin.join("postgres");
    let mut server: Vec<String> = prefix.clone();
    server.push(postgres.display().to_string());
    server.extend(
        [
            "-D",
            &data.display().to_string(),
            "-p",
            &port.to_string(),
            "-k",
            &dir.display().to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=32MB",
        ]
        .map(String::from),
    );
    // The supervisor: start the server, wait for stdin to close (this process ended),
    // stop it and clean up. Arguments are passed positionally, never interpolated.
    let script = r#"dir="$1"; shift
"$@" 2>"$dir/server.log" &
pg=$!
cat >/dev/null
kill -INT "$pg" 2>/dev/null
wait "$pg"
rm -rf "$dir""#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("holdless-test-postgres")
        .arg(&dir)
        .args(&server)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the test cluster: {e}"))?;
    let lifeline = child
        .stdin
        .take()
        .ok_or("the supervisor's stdin is not piped")?;
    let cluster = Cluster {
        admin_url: format!("postgres://holdless@127.0.0.1:{port}/postgres"),
        dir,
        _lifeline: Mutex::new(lifeline),
    };
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        let cases = [
            ("postgres://u@h:5/postgres", "postgres://u@h:5/x"),
            (
                "postgres://u:p@h/db?sslmode=disable",
                "postgres://u:p@h/x?sslmode=disable",
            ),
            ("postgresql://h:5", "postgresql://h:5/x"),
            (
                "postgres://h?sslmode=require",
                "postgres://h/x?sslmode=require",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "x").as_deref(), Ok(want), "{url}");
        }
        assert!(with_database("host=h dbname=d", "x").is_err());
    }

    #[tokio::test]
    async fn each_call_gets_its_own_empty_database() {
        let a = test_postgres().await;
        let b = test_postgres().await;
        assert_ne!(a, b);
        admin::wait_ready(&a, Duration::from_secs(5))
            .await
            .expect("the first database answers");
        admin::wait_ready(&b, Duration::from_secs(5))
            .await
            .expect("the second database answers");
    }
}
