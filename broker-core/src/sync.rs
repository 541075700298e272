//! Locking that outlives a panic elsewhere.
//!
//! A thread that panics while holding a [`Mutex`] poisons it. Broker's mutexes guard small
//! bookkeeping (a guard batch, kept hosts, a slot for a worker) whose every update is complete
//! before anything that can panic, so a poisoned lock still holds consistent data, and refusing it
//! would only turn one panic into two — or lose a host on the way to its check-in. This module must
//! not be used for data an interrupted update could leave half-written.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the data even when another thread panicked while holding it.
///
/// ```
/// use std::sync::Mutex;
///
/// let hosts = Mutex::new(vec!["one"]);
/// broker_core::sync::lock(&hosts).push("two");
/// assert_eq!(*broker_core::sync::lock(&hosts), ["one", "two"]);
/// ```
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_gives_its_data() {
        let hosts = Mutex::new(vec![1]);
        let panicked = std::thread::scope(|s| {
            s.spawn(|| {
                let mut held = hosts.lock().unwrap();
                held.push(2);
                panic!("poisoning the lock on purpose");
            })
            .join()
        });
        assert!(panicked.is_err());
        assert!(hosts.is_poisoned());
        lock(&hosts).push(3);
        assert_eq!(*lock(&hosts), [1, 2, 3]);
    }
}
