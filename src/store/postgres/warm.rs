//! The scheduler's warm-start image in the `warm_image` table (migration 4).
//!
//! **Valid while it is there.** A statement trigger on `callbacks` deletes the image
//! in the transaction of any write to a callback, whoever makes it (this release, an
//! older one that knows nothing of images, `psql`), so an image that is there is what
//! the callbacks are. Unlike sled's, it survives a crash and any number of openings:
//! nothing is needed to prove it was not overtaken.
//!
//! **Saved and taken behind the fence.** The leader saves it as its last write before
//! it gives up the lease, and the next leader takes it (reads and deletes it, in one
//! transaction) under its own epoch before its scheduler loads: a node that lost the
//! lease can neither save an image nor take the new leader's.
//!
//! **In parts.** The image goes in rows of at most [`PART`] bytes, so no single value
//! nears PostgreSQL's 1 GB limit, and the reader streams the rows into one buffer
//! sized beforehand instead of holding every row and a copy.

use futures_util::TryStreamExt;

use super::tx::{exec, query};
use super::{in_tx, PgStore};
use crate::store::{StoreError, StoreResult};

/// Largest part of the image kept in one row.
pub(super) const PART: usize = 8 << 20;

impl PgStore {
    /// See `Store::save_warm_image`: replaces any image, in one fenced transaction.
    pub(super) async fn save_image(&self, image: &[u8]) -> StoreResult<()> {
        in_tx!(self, tx => {
            exec(&tx, "DELETE FROM warm_image", &[]).await?;
            for (part, body) in image.chunks(PART).enumerate() {
                let part = i32::try_from(part)
                    .map_err(|_| StoreError::Io("the warm-start image is too large".into()))?;
                exec(
                    &tx,
                    "INSERT INTO warm_image (part, body) VALUES ($1, $2)",
                    &[&part, &body],
                )
                .await?;
            }
        })
    }

    /// See `Store::take_warm_image`: reads and deletes the image, in one fenced
    /// transaction; `None` when there is none (never saved, taken, or deleted by a
    /// change to a callback).
    pub(super) async fn take_image(&self) -> StoreResult<Option<Vec<u8>>> {
        in_tx!(self, tx => {
            let size: i64 = query(
                &tx,
                "SELECT coalesce(sum(octet_length(body)), 0)::bigint FROM warm_image",
                &[],
            )
            .await?
            .first()
            .map_or(0, |r| r.get(0));
            let mut image = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            let stmt = tx
                .prepare_cached("SELECT part, body FROM warm_image ORDER BY part FOR UPDATE")
                .await?;
            let rows = tx.query_raw(&stmt, std::iter::empty::<i32>()).await?;
            futures_util::pin_mut!(rows);
            let mut parts = 0i32;
            while let Some(row) = rows.try_next().await? {
                let part: i32 = row.try_get(0).map_err(corrupt)?;
                if part != parts {
                    return Err(corrupt(format!("warm-start image part {part} where {parts} was due")).into());
                }
                image.extend_from_slice(row.try_get::<_, &[u8]>(1).map_err(corrupt)?);
                parts += 1;
            }
            exec(&tx, "DELETE FROM warm_image", &[]).await?;
            (parts > 0).then_some(image)
        })
    }
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}
