//! Who may hold a connection. Besides the global cap taken before `accept` (the
//! listener's semaphore), every connection is counted against its source address
//! (IPv6 grouped by /64, the block one subscriber gets), and connections that have not
//! had a publish accepted yet ("pending") against a smaller per-address cap and a
//! global one. An address that holds every slot it may still leaves the others to
//! everyone else; pending connections, which cost the node before any key was shown,
//! are the scarcest.
//!
//! Each admitted connection holds a [`Ticket`]; its counts are returned when the
//! ticket is dropped, so no early return can leak a slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::peer::AddressKey;

/// The caps, from `[rtmp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Connections from one address (or /64).
    pub per_address: usize,
    /// Of those, not yet publishing.
    pub pending_per_address: usize,
    /// Not yet publishing, all addresses together.
    pub pending: usize,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this address already holds rtmp.max_connections_per_address connections")]
    AddressFull,
    #[error("this address already holds rtmp.max_pending_per_address connections that have not published")]
    AddressPendingFull,
    #[error("rtmp.max_pending connections have not published yet")]
    PendingFull,
}

impl Refusal {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::AddressFull => "address_full",
            Refusal::AddressPendingFull => "address_pending_full",
            Refusal::PendingFull => "pending_full",
        }
    }
}

/// Counts of one address.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    open: usize,
    pending: usize,
}

/// The counts of every address that holds a connection (an address with none is
/// forgotten, so the table never outgrows the open connections).
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    addresses: HashMap<AddressKey, Counts>,
    pending: usize,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    /// Admits a new (pending) connection from `ip`, or says which cap it hit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refusal> {
        let key = AddressKey::of(ip);
        let mut s = self.state.lock();
        let counts = s.addresses.get(&key).copied().unwrap_or_default();
        if counts.open >= self.limits.per_address {
            return Err(Refusal::AddressFull);
        }
        if counts.pending >= self.limits.pending_per_address {
            return Err(Refusal::AddressPendingFull);
        }
        if s.pending >= self.limits.pending {
            return Err(Refusal::PendingFull);
        }
        s.pending += 1;
        let c = s.addresses.entry(key).or_default();
        c.open += 1;
        c.pending += 1;
        Ok(Ticket {
            admission: self.clone(),
            key,
            pending: true,
        })
    }

    /// Connections open and pending, all addresses together (for tests and logs).
    pub fn totals(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.addresses.values().map(|c| c.open).sum(), s.pending)
    }
}

/// One admitted connection's place in the counts.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    key: AddressKey,
    /// Still counted as pending.
    pending: bool,
}

impl Ticket {
    /// The connection is past the pre-publish phase (its publish was accepted, or it
    /// has made its one publish request): it no longer counts as pending.
    pub fn leave_pending(&mut self) {
        if std::mem::replace(&mut self.pending, false) {
            let mut s = self.admission.state.lock();
            s.pending -= 1;
            if let Some(c) = s.addresses.get_mut(&self.key) {
                c.pending -= 1;
            }
        }
    }

    /// Whether it still counts as pending.
    pub fn is_pending(&self) -> bool {
        self.pending
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.leave_pending();
        let mut s = self.admission.state.lock();
        if let Some(c) = s.addresses.get_mut(&self.key) {
            c.open -= 1;
            if c.open == 0 {
                s.addresses.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Arc<Admission> {
        Admission::new(AdmissionLimits {
            per_address: 3,
            pending_per_address: 2,
            pending: 4,
        })
    }

    #[test]
    fn caps_per_address_per_pending_and_in_total() {
        let adm = admission();
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let mut t1 = adm.admit(ip).unwrap();
        let _t2 = adm.admit(ip).unwrap();
        assert_eq!(adm.admit(ip).unwrap_err(), Refusal::AddressPendingFull);
        // A publishing connection frees its pending slot, not its address slot.
        t1.leave_pending();
        let _t3 = adm.admit(ip).unwrap();
        assert_eq!(adm.admit(ip).unwrap_err(), Refusal::AddressFull);
        // Other addresses are not affected, up to the global pending cap.
        let other = |n: u8| IpAddr::from([203, 0, 113, n]);
        let _o1 = adm.admit(other(1)).unwrap();
        let _o2 = adm.admit(other(2)).unwrap();
        assert_eq!(adm.admit(other(3)).unwrap_err(), Refusal::PendingFull);
        assert_eq!(adm.totals(), (5, 4));
    }

    #[test]
    fn dropping_a_ticket_returns_its_slots_and_forgets_the_address() {
        let adm = admission();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let mut t = adm.admit(ip).unwrap();
        t.leave_pending();
        t.leave_pending(); // idempotent
        drop(t);
        let t = adm.admit(ip).unwrap();
        drop(t);
        assert_eq!(adm.totals(), (0, 0));
        assert!(adm.state.lock().addresses.is_empty());
    }
}
