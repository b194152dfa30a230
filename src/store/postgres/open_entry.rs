//! A callback's index fields as the database packs them into `callbacks.open_entry`
//! (migration 4), read back without allocating: the start-up and takeover scan reads
//! this one column of a million rows instead of eleven, in well under half the time
//! (the server sends one value a row, the client decodes one; see
//! `schema::OPEN_ENTRIES` and docs/PERFORMANCE.md).
//!
//! Layout, every number big-endian (PostgreSQL's `int4send`/`int8send`):
//!
//! ```text
//! priority             i32
//! virtual_enqueued_at  i64 ms
//! not_before           i64 ms
//! expires_at           i64 ms
//! slot start           i64 ms, i64::MIN: not a scheduled callback
//! lease until          i64 ms, i64::MIN: no lease
//! id, state, phone, queue_id, attempt id
//!                      each i32 byte length (-1: absent) then that many UTF-8 bytes
//! ```
//!
//! Anything else (short, too long, a bad length, invalid UTF-8, an unknown state, an
//! instant out of range) is [`crate::store::StoreError::Corrupt`] for the caller,
//! never a panic.

use chrono::{DateTime, Utc};

use super::tx::state_from_text;
use crate::store::OpenCallbackRef;

/// "No such instant" in the layout's optional instants.
const ABSENT_MS: i64 = i64::MIN;

/// Decodes one entry; the error says what was wrong with it.
pub(super) fn decode(bytes: &[u8]) -> Result<OpenCallbackRef<'_>, String> {
    let mut r = Reader(bytes);
    let priority = r.i32()?;
    let virtual_enqueued_at = r.instant()?;
    let not_before = r.instant()?;
    let expires_at = r.instant()?;
    let slot_start = r.opt_instant()?;
    let lease_until = r.opt_instant()?;
    let id = r.text()?.ok_or("no id")?;
    let state = r.text()?.ok_or("no state")?;
    let state = state_from_text(state).ok_or_else(|| format!("unknown state {state:?}"))?;
    let phone = r.text()?.ok_or("no phone")?;
    let queue_id = r.text()?.ok_or("no queue")?;
    let attempt = r.text()?;
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the fields", r.0.len()));
    }
    Ok(OpenCallbackRef {
        id,
        state,
        phone,
        queue_id,
        priority,
        virtual_enqueued_at,
        not_before,
        expires_at,
        slot_start,
        lease: attempt.zip(lease_until),
    })
}

/// The bytes not read yet.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| format!("ends {} bytes short", N - self.0.len()))?;
        self.0 = rest;
        Ok(*head)
    }

    fn i32(&mut self) -> Result<i32, String> {
        self.take::<4>().map(i32::from_be_bytes)
    }

    fn opt_instant(&mut self) -> Result<Option<DateTime<Utc>>, String> {
        let ms = i64::from_be_bytes(self.take::<8>()?);
        if ms == ABSENT_MS {
            return Ok(None);
        }
        DateTime::from_timestamp_millis(ms)
            .map(Some)
            .ok_or_else(|| format!("instant {ms} out of range"))
    }

    fn instant(&mut self) -> Result<DateTime<Utc>, String> {
        self.opt_instant()?
            .ok_or_else(|| "a required instant is absent".to_owned())
    }

    fn text(&mut self) -> Result<Option<&'a str>, String> {
        let len = self.i32()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| format!("text length {len}"))?;
        if len > self.0.len() {
            return Err(format!("text of {len} bytes, {} left", self.0.len()));
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(text)
            .map(Some)
            .map_err(|e| format!("text not UTF-8: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::callback::CallbackState;

    fn text(out: &mut Vec<u8>, t: Option<&str>) {
        match t {
            Some(t) => {
                out.extend_from_slice(&i32::try_from(t.len()).unwrap().to_be_bytes());
                out.extend_from_slice(t.as_bytes());
            }
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    /// An entry as the migration's expression builds it.
    fn entry(slot: Option<i64>, lease: Option<(&str, i64)>, state: &str) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(-7i32).to_be_bytes());
        for ms in [1_000i64, 2_000, 3_000] {
            out.extend_from_slice(&ms.to_be_bytes());
        }
        out.extend_from_slice(&slot.unwrap_or(ABSENT_MS).to_be_bytes());
        out.extend_from_slice(&lease.map_or(ABSENT_MS, |l| l.1).to_be_bytes());
        for t in ["01J0000000000000000000000A", state, "+4412", "ventes-é"] {
            text(&mut out, Some(t));
        }
        text(&mut out, lease.map(|l| l.0));
        out
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn an_entry_gives_every_index_field() {
        let bytes = entry(Some(4_000), Some(("a1", 5_000)), "dispatched");
        let r = decode(&bytes).unwrap();
        assert_eq!(
            r,
            OpenCallbackRef {
                id: "01J0000000000000000000000A",
                state: CallbackState::Dispatched,
                phone: "+4412",
                queue_id: "ventes-é",
                priority: -7,
                virtual_enqueued_at: at(1_000),
                not_before: at(2_000),
                expires_at: at(3_000),
                slot_start: Some(at(4_000)),
                lease: Some(("a1", at(5_000))),
            }
        );
        let asap = entry(None, None, "pending");
        let r = decode(&asap).unwrap();
        assert_eq!((r.slot_start, r.lease), (None, None));
    }

    #[test]
    fn a_damaged_entry_is_an_error_not_a_panic() {
        let good = entry(Some(4_000), Some(("a1", 5_000)), "pending");
        // Every truncation, and trailing bytes.
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "cut at {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(decode(&long).unwrap_err().contains("after the fields"));
        // A state the store does not write, a bad length, bad UTF-8, a bad instant.
        assert!(decode(&entry(None, None, "paused"))
            .unwrap_err()
            .contains("unknown state"));
        let mut bad_len = good.clone();
        bad_len[44..48].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(decode(&bad_len).unwrap_err().contains("length"));
        let mut bad_utf8 = good.clone();
        bad_utf8[48] = 0xff;
        assert!(decode(&bad_utf8).unwrap_err().contains("UTF-8"));
        let mut far = good;
        far[4..12].copy_from_slice(&i64::MAX.to_be_bytes());
        assert!(decode(&far).unwrap_err().contains("out of range"));
    }
}
