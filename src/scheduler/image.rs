//! The warm-start image: the scheduler's index of open callbacks written at a clean
//! stop, so the next start reads one compact file instead of every callback record.
//!
//! A start from the store reads each open callback's record (a million records take
//! seconds: sled walks its whole tree, PostgreSQL sends a million rows). What the
//! scheduler keeps of them is far smaller: per callback its id, number, queue, due
//! time, state, timer, booked slot and attempt, and, for a callback holding a place in
//! line, that place. A clean stop writes exactly that; the store keeps it only while
//! no callback changes after it (see [`crate::store::Store::save_warm_image`]), so an
//! image is either what a scan would find or not used at all.
//!
//! What a start from an image does differently from a start from the records, and why
//! it comes to the same:
//! - Lines are restored as they were at the stop, in their order then. A callback
//!   that fell due while holdless was down has its due time as its timer, which fires
//!   at once and puts it in line (a start from the records lines it directly).
//! - An entry with no timer at the stop (a dispatch whose lease ran out while no
//!   dialer was connected) gets one at the start instant: its record is read at once
//!   and decides, as it would on a start from the records.
//! - A callback held back by its calling window is back in line, as on any start.
//!
//! Layout (little-endian): the magic, the queue names, the entries, a CRC-32 of all
//! that. An image that does not check out is ignored and the start reads the store.

use chrono::{DateTime, Utc};

use super::numbers::Phone;
use crate::domain::callback::CallbackState;

const MAGIC: &[u8; 16] = b"holdless-warm-1\n";

const TIMED: u8 = 1;
const SLOT: u8 = 2;
const ATTEMPT: u8 = 4;
const LINED: u8 = 8;

/// A callback's place in line, as the floor holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Lined {
    pub priority: i32,
    pub at: DateTime<Utc>,
}

/// One open callback of an image.
#[derive(Debug, PartialEq)]
pub(super) struct ImageEntry<'a> {
    pub id: &'a str,
    pub phone: Phone,
    /// Index into the image's queue names.
    pub queue: u32,
    pub not_before: DateTime<Utc>,
    pub state: CallbackState,
    pub timer: Option<DateTime<Utc>>,
    pub slot_start: Option<DateTime<Utc>>,
    pub attempt: Option<&'a str>,
    pub lined: Option<Lined>,
}

/// Why an image was not used.
#[derive(Debug, thiserror::Error)]
#[error("warm-start image unusable: {0}")]
pub(super) struct ImageError(&'static str);

/// Writes an image: `queues` are the names `entries` index into. Entries should come
/// in line order (lined ones first, in the order of their places), as a start lines
/// them up in the order read.
pub(super) struct Writer {
    buf: Vec<u8>,
    entries_at: usize,
    entries: u64,
    /// A text too long for the layout was met: no image.
    unfit: bool,
}

impl Writer {
    pub fn new(queues: &[&str], capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(64 + capacity * 72);
        buf.extend_from_slice(MAGIC);
        put_u32(&mut buf, queues.len() as u32);
        let mut unfit = false;
        for q in queues {
            unfit |= !put_str16(&mut buf, q);
        }
        let entries_at = buf.len();
        put_u32(&mut buf, 0);
        Self {
            buf,
            entries_at,
            entries: 0,
            unfit,
        }
    }

    pub fn push(&mut self, e: &ImageEntry<'_>) {
        let b = &mut self.buf;
        let mut fits = put_str16(b, e.id);
        match &e.phone {
            Phone::E164(n) => {
                b.push(0);
                b.extend_from_slice(&n.to_le_bytes());
            }
            Phone::Other(text) => {
                b.push(1);
                fits &= put_str16(b, text);
            }
        }
        put_u32(b, e.queue);
        put_at(b, e.not_before);
        b.push(match e.state {
            CallbackState::Dispatched => 1,
            _ => 0,
        });
        let flags = flag(e.timer.is_some(), TIMED)
            | flag(e.slot_start.is_some(), SLOT)
            | flag(e.attempt.is_some(), ATTEMPT)
            | flag(e.lined.is_some(), LINED);
        b.push(flags);
        if let Some(t) = e.timer {
            put_at(b, t);
        }
        if let Some(s) = e.slot_start {
            put_at(b, s);
        }
        if let Some(a) = e.attempt {
            fits &= put_str16(b, a);
        }
        if let Some(l) = e.lined {
            b.extend_from_slice(&l.priority.to_le_bytes());
            put_at(b, l.at);
        }
        self.entries += 1;
        self.unfit |= !fits;
    }

    /// The image; `None` when a text did not fit the layout (the next start then
    /// reads the store).
    pub fn finish(mut self) -> Option<Vec<u8>> {
        let Ok(entries) = u32::try_from(self.entries) else {
            return None;
        };
        if self.unfit {
            return None;
        }
        let at = self.entries_at;
        self.buf[at..at + 4].copy_from_slice(&entries.to_le_bytes());
        let crc = crc32fast::hash(&self.buf);
        put_u32(&mut self.buf, crc);
        Some(self.buf)
    }
}

fn flag(on: bool, bit: u8) -> u8 {
    if on {
        bit
    } else {
        0
    }
}

fn put_u32(b: &mut Vec<u8>, n: u32) {
    b.extend_from_slice(&n.to_le_bytes());
}

/// A string of at most 65,535 bytes (ids, numbers and queue names are far shorter);
/// false, writing nothing, for a longer one.
fn put_str16(b: &mut Vec<u8>, s: &str) -> bool {
    let Ok(n) = u16::try_from(s.len()) else {
        return false;
    };
    b.extend_from_slice(&n.to_le_bytes());
    b.extend_from_slice(s.as_bytes());
    true
}

fn put_at(b: &mut Vec<u8>, t: DateTime<Utc>) {
    b.extend_from_slice(&t.timestamp().to_le_bytes());
    b.extend_from_slice(&t.timestamp_subsec_nanos().to_le_bytes());
}

/// Reads an image's entries in the order written. Checks the whole image (magic and
/// CRC) before handing out anything.
/// `entry` gets the image's queue names along with each entry.
pub(super) fn read<'a>(
    image: &'a [u8],
    mut entry: impl FnMut(&[&'a str], ImageEntry<'a>),
) -> Result<u64, ImageError> {
    let Some(body_len) = image.len().checked_sub(4) else {
        return Err(ImageError("truncated"));
    };
    let (body, crc) = image.split_at(body_len);
    if !body.starts_with(MAGIC) {
        return Err(ImageError("not an image of this version"));
    }
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| ImageError("truncated"))?);
    if crc32fast::hash(body) != crc {
        return Err(ImageError("checksum mismatch"));
    }
    let mut r = Reader {
        b: &body[MAGIC.len()..],
    };
    let queue_count = r.u32()?;
    let mut queues = Vec::with_capacity(queue_count.min(1_024) as usize);
    for _ in 0..queue_count {
        queues.push(r.str16()?);
    }
    let n = r.u32()?;
    for _ in 0..n {
        let id = r.str16()?;
        let phone = match r.u8()? {
            0 => Phone::E164(u64::from_le_bytes(r.array()?)),
            1 => Phone::Other(Box::new(r.str16()?.into())),
            _ => return Err(ImageError("unknown number form")),
        };
        let q = r.u32()?;
        if q >= queue_count {
            return Err(ImageError("queue out of range"));
        }
        let not_before = r.at()?;
        let state = match r.u8()? {
            0 => CallbackState::Pending,
            1 => CallbackState::Dispatched,
            _ => return Err(ImageError("unknown state")),
        };
        let flags = r.u8()?;
        let timer = (flags & TIMED != 0).then(|| r.at()).transpose()?;
        let slot_start = (flags & SLOT != 0).then(|| r.at()).transpose()?;
        let attempt = (flags & ATTEMPT != 0).then(|| r.str16()).transpose()?;
        let lined = (flags & LINED != 0)
            .then(|| {
                Ok(Lined {
                    priority: i32::from_le_bytes(r.array()?),
                    at: r.at()?,
                })
            })
            .transpose()?;
        entry(
            &queues,
            ImageEntry {
                id,
                phone,
                queue: q,
                not_before,
                state,
                timer,
                slot_start,
                attempt,
                lined,
            },
        );
    }
    if !r.b.is_empty() {
        return Err(ImageError("bytes after the last entry"));
    }
    Ok(u64::from(n))
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ImageError> {
        if self.b.len() < n {
            return Err(ImageError("truncated"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ImageError> {
        self.take(N)?
            .try_into()
            .map_err(|_| ImageError("truncated"))
    }

    fn u8(&mut self) -> Result<u8, ImageError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, ImageError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn str16(&mut self) -> Result<&'a str, ImageError> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| ImageError("text not UTF-8"))
    }

    fn at(&mut self) -> Result<DateTime<Utc>, ImageError> {
        let secs = i64::from_le_bytes(self.array()?);
        let nanos = u32::from_le_bytes(self.array()?);
        DateTime::from_timestamp(secs, nanos).ok_or(ImageError("instant out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 123_456_789).expect("in range")
    }

    fn sample() -> Vec<ImageEntry<'static>> {
        vec![
            ImageEntry {
                id: "01A",
                phone: Phone::of("+441632960001"),
                queue: 1,
                not_before: at(0),
                state: CallbackState::Pending,
                timer: Some(at(3600)),
                slot_start: None,
                attempt: None,
                lined: Some(Lined {
                    priority: -3,
                    at: at(-60),
                }),
            },
            ImageEntry {
                id: "01B",
                phone: Phone::of("not a number ✓"),
                queue: 0,
                not_before: at(100),
                state: CallbackState::Dispatched,
                timer: None,
                slot_start: Some(at(7200)),
                attempt: Some("att-1"),
                lined: None,
            },
            ImageEntry {
                id: "01C",
                phone: Phone::of("+12125550100"),
                queue: 0,
                not_before: DateTime::<Utc>::MIN_UTC,
                state: CallbackState::Pending,
                timer: Some(DateTime::<Utc>::MAX_UTC),
                slot_start: None,
                attempt: None,
                lined: None,
            },
        ]
    }

    fn write(entries: &[ImageEntry<'_>]) -> Vec<u8> {
        let mut w = Writer::new(&["general", "billing"], entries.len());
        for e in entries {
            w.push(e);
        }
        w.finish().expect("fits")
    }

    #[test]
    fn an_image_reads_back_every_field_in_order() {
        let entries = sample();
        let image = write(&entries);
        let mut back = Vec::new();
        let n = read(&image, |queues, e| {
            assert_eq!(queues, ["general", "billing"]);
            back.push(e)
        })
        .expect("reads");
        assert_eq!(n, 3);
        assert_eq!(back, entries);
    }

    #[test]
    fn a_damaged_or_cut_image_is_refused_before_anything_is_handed_out() {
        let image = write(&sample());
        let mut handed = 0;
        for cut in [0, 3, 17, image.len() / 2, image.len() - 1] {
            assert!(read(&image[..cut], |_, _| handed += 1).is_err());
        }
        for i in [0, 20, image.len() / 2, image.len() - 2] {
            let mut bad = image.clone();
            bad[i] ^= 0x40;
            assert!(read(&bad, |_, _| handed += 1).is_err(), "byte {i}");
        }
        assert_eq!(handed, 0);
    }

    #[test]
    fn a_text_too_long_for_the_layout_means_no_image() {
        let long = "9".repeat(70_000);
        let mut e = sample();
        e[1].phone = Phone::Other(Box::new(long.as_str().into()));
        let mut w = Writer::new(&["general", "billing"], 3);
        for e in &e {
            w.push(e);
        }
        assert!(w.finish().is_none());
    }

    #[test]
    fn an_empty_image_reads_as_no_callbacks() {
        let image = Writer::new(&[], 0).finish().expect("fits");
        assert_eq!(read(&image, |_, _| {}).expect("reads"), 0);
    }
}
