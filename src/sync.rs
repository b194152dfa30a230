//! Locking shared by the modules that keep small state behind a `std` mutex.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the data as it is if a thread panicked while holding it: each
/// caller keeps state that a half-done update cannot leave unusable (a cached
/// figure, a counter, an `Option` swapped whole), and a panic is reported where it
/// happened.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
