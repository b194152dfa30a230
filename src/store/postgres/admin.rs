//! Cluster-level chores that are not part of the store: waiting for a server to accept
//! connections and creating a database. Used by the test bootstrap
//! (`store::pgtest`), kept here so the driver stays inside `store::postgres`.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// Connects once to `url` and runs a trivial query.
async fn ping(url: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    let task = tokio::spawn(conn);
    let r = client.simple_query("SELECT 1").await.map(|_| ());
    drop(client);
    let _ = task.await;
    r
}

/// Polls `url` until the server answers a query, at most `limit`; the last error when it
/// never did.
pub(crate) async fn wait_ready(url: &str, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match ping(url).await {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() >= limit => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Creates database `name` (a plain identifier: letters, digits, `_`) on the server
/// `url` connects to.
pub(crate) async fn create_database(url: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("{name:?} is not a plain database name"));
    }
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let r = client
        .simple_query(&format!("CREATE DATABASE {name}"))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    drop(client);
    let _ = task.await;
    r
}
