//! `holdless export` and `holdless import`: the two commands that open the store
//! themselves instead of asking a server. They work on a stopped server's store, found
//! through the same configuration as `serve` (defaults < file < `HOLDLESS__*`). sled
//! holds an exclusive lock, so while a server runs on the store they fail with
//! [`EXIT_IN_USE`] and touch nothing. The file format is `crate::export`'s.

use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use super::{Failure, EXIT_CONFIG};
use std::sync::Arc;

use crate::config::{Settings, StoreBackend, StoreSettings};
use crate::export;
use crate::store::{RecordCounts, Store, StoreError};

/// Exit status when the store is locked by a running server (BSD `EX_TEMPFAIL`: stop
/// the server and try again).
pub const EXIT_IN_USE: u8 = 75;
/// Exit status when the import file has problems (like a plan that does not validate).
pub const EXIT_INVALID: u8 = 2;

fn failure(message: String) -> Failure {
    Failure { code: 1, message }
}

fn settings(config: Option<&Path>) -> Result<Settings, Failure> {
    Settings::load(config).map_err(|e| Failure {
        code: EXIT_CONFIG,
        message: format!("bad config: {e}"),
    })
}

async fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, Failure> {
    crate::app::open_store(settings).await.map_err(|e| match e {
        StoreError::InUse { .. } => Failure {
            code: EXIT_IN_USE,
            message: format!(
                "store {} is in use by a running server (or another holdless command); \
                 export and import work on a stopped server's store: stop it first",
                settings.path.display()
            ),
        },
        other => failure(format!(
            "cannot open the store {}: {other}",
            crate::app::store_location(settings)
        )),
    })
}

fn summary(verb: &str, c: RecordCounts) -> String {
    format!(
        "{verb} plans={} customers={} callbacks={}\n",
        c.plans, c.customers, c.callbacks
    )
}

/// `holdless export --out FILE`: writes the store's plans, customers and open
/// callbacks. The file appears complete or not at all (written beside it, synced,
/// renamed); `-` writes to standard output and the summary to standard error.
pub async fn export(config: Option<PathBuf>, out: PathBuf) -> Result<String, Failure> {
    let settings = settings(config.as_deref())?;
    let path = &settings.store.path;
    // Opening would create an empty store: say so instead of exporting nothing.
    if settings.store.backend == StoreBackend::Sled && !path.join("db").is_file() {
        return Err(failure(format!(
            "no holdless store at {} (store.path): nothing to export",
            path.display()
        )));
    }
    let location = crate::app::store_location(&settings.store);
    let store = open(&settings.store).await?;
    let data = export::snapshot(&*store).await;
    store.close().await;
    let data = data.map_err(|e| failure(format!("cannot read the store {location}: {e}")))?;
    let now = chrono::Utc::now();
    let to_stdout = out == Path::new("-");
    let counts = tokio::task::spawn_blocking(move || write_file(&out, now, &data))
        .await
        .map_err(|e| failure(format!("writing the export failed: {e}")))??;
    if to_stdout {
        eprint!("{}", summary("exported", counts));
        return Ok(String::new());
    }
    Ok(summary("exported", counts))
}

fn write_file(
    out: &Path,
    now: chrono::DateTime<chrono::Utc>,
    data: &crate::store::StoreImport,
) -> Result<RecordCounts, Failure> {
    let err = |e: &dyn std::fmt::Display| failure(format!("cannot write {}: {e}", out.display()));
    if out == Path::new("-") {
        let stdout = std::io::stdout();
        let mut w = BufWriter::new(stdout.lock());
        return export::write(&mut w, now, data).map_err(|e| err(&e));
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Created 0600: the file holds customers' numbers and notes.
    let mut tmp = tempfile::Builder::new()
        .prefix(".holdless-export-")
        .tempfile_in(dir)
        .map_err(|e| err(&e))?;
    let counts = {
        let mut w = BufWriter::new(tmp.as_file_mut());
        export::write(&mut w, now, data).map_err(|e| err(&e))?
    };
    tmp.as_file().sync_all().map_err(|e| err(&e))?;
    tmp.persist(out).map_err(|e| err(&e.error))?;
    // Make the rename itself durable.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err(&e))?;
    Ok(counts)
}

/// `holdless import FILE`: checks the whole file, then writes it into an empty (or
/// new) store in one transaction and waits until it is durable.
pub async fn import(config: Option<PathBuf>, file: PathBuf) -> Result<String, Failure> {
    let settings = settings(config.as_deref())?;
    let location = crate::app::store_location(&settings.store);
    let name = file.display().to_string();
    let parsed = tokio::task::spawn_blocking(move || {
        if file == Path::new("-") {
            return Ok(export::read(std::io::stdin().lock()));
        }
        std::fs::File::open(&file).map(|f| export::read(BufReader::new(f)))
    })
    .await
    .map_err(|e| failure(format!("reading {name} failed: {e}")))?
    .map_err(|e| failure(format!("cannot read {name}: {e}")))?;
    let data = parsed.map_err(|issues| {
        let mut message = format!("{name}: nothing imported:");
        for i in &issues {
            message.push_str(&format!("\n  {name}: {i}"));
        }
        if issues.len() >= export::MAX_REPORTED_ISSUES {
            message.push_str(&format!(
                "\n  (stopped after {} problems)",
                export::MAX_REPORTED_ISSUES
            ));
        }
        Failure {
            code: EXIT_INVALID,
            message,
        }
    })?;
    let store = open(&settings.store).await?;
    let done = store.import(data).await;
    store.close().await;
    let counts = done.map_err(|e| match e {
        StoreError::NotEmpty { what } => failure(format!(
            "the store {location} already holds {what}: import restores into an empty or new \
             store only; nothing imported"
        )),
        StoreError::BadImport(m) => Failure {
            code: EXIT_INVALID,
            message: format!("{name}: nothing imported: {m}"),
        },
        other => failure(format!(
            "importing into the store {location} failed: {other}"
        )),
    })?;
    Ok(summary("imported", counts))
}
