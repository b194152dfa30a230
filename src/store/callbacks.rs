//! Callback persistence in sled.
//!
//! - `callbacks`: id (ULID, so creation order) -> [`Callback`] (JSON)
//! - `callbacks_due`: not-before time (i64 ms, sign flipped, big-endian) + id -> empty,
//!   for every PENDING callback
//! - `callbacks_open`: phone, 0x00, queue -> id, for every open callback (dedupe)
//! - `callback_requests`: request id -> [`RequestRecord`] (idempotency, pruned)
//!
//! Every change of a callback and its index entries is one sled transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::sled_store::{abort, corrupt, decode, encode, io, tx_result, SledStore};
use super::{CallbackCreate, CallbackFilter, StoreError, StoreResult};
use crate::domain::callback::{Callback, CallbackState};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RequestRecord {
    pub callback_id: String,
    pub at: DateTime<Utc>,
}

pub(crate) fn due_key(c: &Callback) -> Vec<u8> {
    let mut k = (c.not_before.timestamp_millis() as u64 ^ (1 << 63))
        .to_be_bytes()
        .to_vec();
    k.extend_from_slice(c.id.as_bytes());
    k
}

pub(crate) fn open_key(phone: &str, queue: &str) -> Vec<u8> {
    let mut k = phone.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(queue.as_bytes());
    k
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn read(tree: &TransactionalTree, id: &[u8]) -> TxResult<Option<Callback>> {
    match tree.get(id)? {
        None => Ok(None),
        Some(v) => decode(&v).map(Some).or_else(abort),
    }
}

/// Writes `new` (replacing `old`, if any) with its index entries.
fn put(
    callbacks: &TransactionalTree,
    due: &TransactionalTree,
    open: &TransactionalTree,
    old: Option<&Callback>,
    new: &Callback,
) -> TxResult<()> {
    if let Some(old) = old {
        if old.state == CallbackState::Pending {
            due.remove(due_key(old))?;
        }
        if old.state.is_open() && !new.state.is_open() {
            let k = open_key(&old.phone, &old.queue_id);
            if open.get(&k)?.as_deref() == Some(old.id.as_bytes()) {
                open.remove(k)?;
            }
        }
    }
    if new.state == CallbackState::Pending {
        due.insert(due_key(new), &[] as &[u8])?;
    }
    if new.state.is_open() {
        open.insert(open_key(&new.phone, &new.queue_id), new.id.as_bytes())?;
    }
    callbacks.insert(new.id.as_bytes(), encode(new))?;
    Ok(())
}

impl SledStore {
    pub(crate) fn create_callback_blocking(
        &self,
        cb: Callback,
        request_id: Option<String>,
    ) -> StoreResult<CallbackCreate> {
        let t = &self.trees;
        let r = (
            &t.callbacks,
            &t.callbacks_due,
            &t.callbacks_open,
            &t.callback_requests,
        )
            .transaction(|(callbacks, due, open, requests)| {
                if let Some(rid) = &request_id {
                    if let Some(v) = requests.get(rid.as_bytes())? {
                        let rec: RequestRecord = decode(&v).or_else(abort)?;
                        return match read(callbacks, rec.callback_id.as_bytes())? {
                            Some(c) => Ok(CallbackCreate::Replayed(c)),
                            None => abort(corrupt(format!(
                                "request {rid} names missing callback {}",
                                rec.callback_id
                            ))),
                        };
                    }
                }
                let existing = match open.get(open_key(&cb.phone, &cb.queue_id))? {
                    Some(id) => read(callbacks, &id)?,
                    None => None,
                };
                let (outcome, id) = match existing {
                    Some(c) => {
                        let id = c.id.clone();
                        (CallbackCreate::Existing(c), id)
                    }
                    None => {
                        put(callbacks, due, open, None, &cb)?;
                        (CallbackCreate::Created(cb.clone()), cb.id.clone())
                    }
                };
                if let Some(rid) = &request_id {
                    let rec = RequestRecord {
                        callback_id: id,
                        at: cb.created_at,
                    };
                    requests.insert(rid.as_bytes(), encode(&rec))?;
                }
                Ok(outcome)
            });
        tx_result(r)
    }

    pub(crate) fn update_callback_blocking(&self, cb: Callback) -> StoreResult<()> {
        let t = &self.trees;
        let r = (&t.callbacks, &t.callbacks_due, &t.callbacks_open).transaction(
            |(callbacks, due, open)| {
                let old = read(callbacks, cb.id.as_bytes())?;
                match &old {
                    Some(o) if o.version + 1 == cb.version => {}
                    _ => return abort(StoreError::Stale { id: cb.id.clone() }),
                }
                put(callbacks, due, open, old.as_ref(), &cb)
            },
        );
        tx_result(r)
    }

    pub(crate) fn get_callback(&self, id: &str) -> StoreResult<Option<Callback>> {
        self.trees
            .callbacks
            .get(id.as_bytes())
            .map_err(io)?
            .map(|v| decode(&v))
            .transpose()
    }

    pub(crate) fn open_callbacks_blocking(&self) -> StoreResult<Vec<Callback>> {
        let mut out = Vec::new();
        for item in self.trees.callbacks_open.iter() {
            let (_, id) = item.map_err(io)?;
            let id = std::str::from_utf8(&id).map_err(corrupt)?;
            match self.get_callback(id)? {
                Some(c) if c.state.is_open() => out.push(c),
                _ => {
                    return Err(corrupt(format!(
                        "open index names callback {id}, which is not open"
                    )))
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn list_callbacks_blocking(
        &self,
        filter: &CallbackFilter,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Callback>> {
        let mut out = Vec::new();
        let range = match after {
            Some(a) => {
                let mut start = a.as_bytes().to_vec();
                start.push(0);
                self.trees.callbacks.range(start..)
            }
            None => self.trees.callbacks.range::<&[u8], _>(..),
        };
        for item in range {
            let (_, v) = item.map_err(io)?;
            let c: Callback = decode(&v)?;
            if filter.queue_id.as_ref().is_some_and(|q| q != &c.queue_id)
                || filter.state.is_some_and(|s| s != c.state)
                || filter.phone.as_ref().is_some_and(|p| p != &c.phone)
            {
                continue;
            }
            out.push(c);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    pub(crate) fn prune_callback_requests_blocking(
        &self,
        before: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let mut n = 0;
        for item in self.trees.callback_requests.iter() {
            let (k, v) = item.map_err(io)?;
            let rec: RequestRecord = decode(&v)?;
            if rec.at < before {
                self.trees.callback_requests.remove(k).map_err(io)?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub(crate) fn check_callback_indexes_blocking(&self) -> StoreResult<Vec<String>> {
        let mut problems = Vec::new();
        let mut pending = std::collections::BTreeSet::new();
        let mut open = std::collections::BTreeMap::new();
        for item in self.trees.callbacks.iter() {
            let (_, v) = item.map_err(io)?;
            let c: Callback = decode(&v)?;
            if c.state == CallbackState::Pending {
                pending.insert(due_key(&c));
            }
            if c.state.is_open()
                && open
                    .insert(open_key(&c.phone, &c.queue_id), c.id.clone())
                    .is_some()
            {
                problems.push(format!(
                    "two open callbacks for {} in {}",
                    c.phone, c.queue_id
                ));
            }
        }
        let due: std::collections::BTreeSet<Vec<u8>> = self
            .trees
            .callbacks_due
            .iter()
            .keys()
            .map(|k| k.map(|k| k.to_vec()).map_err(io))
            .collect::<StoreResult<_>>()?;
        for k in due.symmetric_difference(&pending) {
            let id = String::from_utf8_lossy(k.get(8..).unwrap_or_default()).into_owned();
            problems.push(if due.contains(k) {
                format!("due index holds {id}, which is not pending at that time")
            } else {
                format!("pending callback {id} is missing from the due index")
            });
        }
        for item in self.trees.callbacks_open.iter() {
            let (k, v) = item.map_err(io)?;
            let id = String::from_utf8_lossy(&v).into_owned();
            if open.remove(k.as_ref()) != Some(id.clone()) {
                problems.push(format!("open index holds {id}, which is not the open callback for its number and queue"));
            }
        }
        for (_, id) in open {
            problems.push(format!("open callback {id} is missing from the open index"));
        }
        Ok(problems)
    }
}
