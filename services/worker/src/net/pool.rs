//! A listener's backends and its round-robin cursor. Replaced in place when the table
//! changes, so a backend that leaves is never picked again, while connections already
//! made to it carry on.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use super::table::Subnet;

#[derive(Debug, Default)]
pub struct Pool {
    backends: RwLock<Arc<Vec<SocketAddr>>>,
    next: AtomicUsize,
    /// Clients in these subnets are turned away (see [`super::table::Want::deny`]).
    deny: RwLock<Arc<Vec<Subnet>>>,
}

impl Pool {
    pub fn new(backends: Vec<SocketAddr>) -> Self {
        Self {
            backends: RwLock::new(Arc::new(backends)),
            next: AtomicUsize::new(0),
            deny: RwLock::default(),
        }
    }

    /// Turns clients inside `deny` away from now on.
    pub fn set_deny(&self, deny: Vec<Subnet>) {
        let deny = Arc::new(deny);
        match self.deny.write() {
            Ok(mut d) => *d = deny,
            Err(poisoned) => *poisoned.into_inner() = deny,
        }
    }

    /// Whether a client at `ip` may use this listener.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let deny = match self.deny.read() {
            Ok(d) => d.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        super::table::admits(&deny, ip)
    }

    /// The current backends.
    pub fn get(&self) -> Arc<Vec<SocketAddr>> {
        match self.backends.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the backends (a no-op when they are the same).
    pub fn set(&self, backends: Vec<SocketAddr>) {
        if *self.get() == backends {
            return;
        }
        let backends = Arc::new(backends);
        match self.backends.write() {
            Ok(mut b) => *b = backends,
            Err(poisoned) => *poisoned.into_inner() = backends,
        }
    }

    /// The next backend, round robin; None when there is none.
    pub fn pick(&self) -> Option<SocketAddr> {
        let backends = self.get();
        if backends.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % backends.len();
        backends.get(i).copied()
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.get().contains(addr)
    }

    pub fn len(&self) -> usize {
        self.get().len()
    }

    pub fn is_empty(&self) -> bool {
        self.get().is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn round_robin_over_the_current_set() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let pool = Pool::new(vec![a, b]);
        let picks: Vec<_> = (0..4).map(|_| pool.pick().unwrap()).collect();
        assert_eq!(picks, vec![a, b, a, b]);
        pool.set(vec![b]);
        assert!((0..4).all(|_| pool.pick() == Some(b)));
        pool.set(vec![]);
        assert_eq!(pool.pick(), None);
    }
}
