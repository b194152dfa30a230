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

pub(super) fn settings(config: Option<&Path>) -> Result<Settings, Failure> {
    Settings::load(config).map_err(|e| Failure {
        code: EXIT_CONFIG,
        message: format!("bad config: {e}"),
    })
}

pub(super) async fn open(settings: &StoreSettings) -> Result<Arc<dyn Store>, Failure> {
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

/// Callbacks per durable batch when `holdless import` writes a file.
pub const IMPORT_BATCH: usize = 10_000;
/// The most page cache (MB) `holdless import` gives sled, whatever `store.cache_mb`
/// says (sled's resident memory runs to a few times its cache).
pub const IMPORT_CACHE_MB: u64 = 32;

/// Where an import reads its file from, twice: once to check it whole, once to write
/// it. Standard input cannot be read twice, so the first read keeps a copy of it in an
/// unnamed temporary file (0600, gone when closed).
enum Source {
    Path(PathBuf),
    Spooled(std::fs::File),
}

/// Reads `inner` and copies what it reads into `copy`.
struct Tee<R> {
    inner: R,
    copy: std::io::BufWriter<std::fs::File>,
}

impl<R: std::io::Read> std::io::Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(&mut self.copy, &buf[..n])?;
        Ok(n)
    }
}

type Checked = (Result<crate::store::StoreImport, Vec<export::Issue>>, u64);

/// The first read: checks the whole file, keeping plans and customers but no
/// callback (only their count).
fn check_file(file: &Path) -> std::io::Result<(Checked, Source)> {
    let mut n = 0u64;
    let mut count = |_| n += 1;
    if file == Path::new("-") {
        let spool = tempfile::tempfile()?;
        let mut tee = Tee {
            inner: std::io::stdin().lock(),
            copy: BufWriter::new(spool.try_clone()?),
        };
        let checked = export::read_with(BufReader::new(&mut tee), &mut count);
        std::io::Write::flush(&mut tee.copy)?;
        let mut spool = spool;
        std::io::Seek::rewind(&mut spool)?;
        return Ok(((checked, n), Source::Spooled(spool)));
    }
    let f = std::fs::File::open(file)?;
    let checked = export::read_with(BufReader::new(f), &mut count);
    Ok(((checked, n), Source::Path(file.to_owned())))
}

/// The second read: sends the file's callbacks in batches of `batch`. A file that no
/// longer checks (changed since the first read) ends with an error, which makes the
/// store abandon the import.
fn send_callbacks(
    source: Source,
    batch: usize,
    tx: &tokio::sync::mpsc::Sender<
        crate::store::StoreResult<Vec<crate::domain::callback::Callback>>,
    >,
) {
    let input: Box<dyn std::io::Read> = match source {
        Source::Spooled(f) => Box::new(f),
        Source::Path(p) => match std::fs::File::open(&p) {
            Ok(f) => Box::new(f),
            Err(e) => {
                let _ = tx.blocking_send(Err(StoreError::BadImport(format!(
                    "cannot read the file again: {e}"
                ))));
                return;
            }
        },
    };
    let mut pending = Vec::with_capacity(batch);
    // The store stopped taking batches (it failed): read on without sending.
    let mut stopped = false;
    let checked = export::read_again(BufReader::new(input), &mut |c| {
        if stopped {
            return;
        }
        pending.push(c);
        if pending.len() >= batch {
            let full = std::mem::replace(&mut pending, Vec::with_capacity(batch));
            stopped = tx.blocking_send(Ok(full)).is_err();
        }
    });
    let last = match checked {
        Ok(_) => Ok(pending),
        Err(issues) => Err(StoreError::BadImport(format!(
            "the file changed while it was imported: {}",
            issues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    };
    if !stopped {
        let _ = tx.blocking_send(last);
    }
}

/// `holdless import FILE`: checks the whole file, then writes it into an empty (or
/// new) store: the callbacks in durable batches of `batch` (so a million of them
/// never sit in memory at once), the plans and customers last. All or nothing: a
/// failure removes what was written, and after a crash on the way the next open of
/// the store does (see `store::sled`).
pub async fn import(
    config: Option<PathBuf>,
    file: PathBuf,
    batch: usize,
) -> Result<String, Failure> {
    let settings = settings(config.as_deref())?;
    let location = crate::app::store_location(&settings.store);
    let name = file.display().to_string();
    let ((parsed, callbacks), source) = tokio::task::spawn_blocking(move || check_file(&file))
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
    // Writing reads few pages back (the last leaf of each key space, a dedupe lookup
    // per callback), so a large page cache only holds memory here.
    let mut store_settings = settings.store.clone();
    store_settings.cache_mb = store_settings.cache_mb.min(IMPORT_CACHE_MB);
    let store = open(&store_settings).await?;
    let batch = batch.max(1);
    // Two batches in flight: one being written, the next being read.
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let reader = tokio::task::spawn_blocking(move || send_callbacks(source, batch, &tx));
    let done = store.import_batches(data, callbacks, rx).await;
    store.close().await;
    // The reader ends once the store stops taking batches (the channel closed).
    let _ = reader.await;
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
