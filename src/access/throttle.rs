//! Back-off after failed client logins, and which bcrypt workers a credential check may use.
//!
//! Every address (an IPv6 client by its /64 network, which one host usually holds whole) and
//! every user name gets [`AUTH_FREE_FAILURES`] failed checks; after that it is backed off: for
//! [`AUTH_BACKOFF_FIRST`] after the fifth failure, doubling with each further failure up to
//! [`AUTH_BACKOFF_MAX`]. A backed-off attempt is answered `429 TOOMANYREQUESTS` with
//! `Retry-After` and never reaches bcrypt, so a flood of guesses costs one check per back-off
//! period rather than one per request, and does not count as a further failure. Failures are
//! forgotten after [`AUTH_FAILURE_MEMORY`] without one. Checks running at once are limited the same
//! way: an address or user may have as many running as it has free failures left (at least one).
//!
//! An address where someone logged in within [`AUTH_TRUSTED_FOR`] is *trusted*: its checks run on
//! bcrypt workers of their own, so guesses from elsewhere cannot queue in front of them; the
//! per-user back-off does not hold it back (or anyone could lock a user out by failing against
//! the name from elsewhere); and while the address itself is backed off (its own failures: a
//! mirror behind a load balancer sees one address for many clients) credentials it already proved
//! still work from the cache. Checks from other addresses run on a second set of workers, unless the
//! address or the user has failed lately or has a check running already: those share
//! [`AUTH_SUSPECT_CHECKS`] workers. So a flood of wrong guesses from one address takes one worker
//! of the second set at most, and a real user's first login from a clean address does not wait
//! behind it.
//!
//! Memory is bounded: at most [`AUTH_TRACKED_ADDRESSES`] addresses and [`AUTH_TRACKED_USERS`] user
//! names are tracked one by one (records that are forgotten are swept when the map is full, at
//! most once a second). New ones beyond that share one record per map, which a flood therefore
//! backs off quickly, while the records already tracked (and trusted addresses) stay untouched: a
//! flood of distinct names or addresses can neither grow memory nor push out the record of the
//! user it is guessing for.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::limits::{
    AUTH_BACKOFF_FIRST, AUTH_BACKOFF_MAX, AUTH_FAILURE_MEMORY, AUTH_FREE_FAILURES, AUTH_MAX_USER,
    AUTH_TRACKED_ADDRESSES, AUTH_TRACKED_USERS, AUTH_TRUSTED_ADDRESSES, AUTH_TRUSTED_FOR,
};

/// The key an address is tracked by: IPv4 as is, IPv6 by its /64 (IPv4-mapped as IPv4); `None`
/// for a request without an address.
pub type AddrKey = Option<IpAddr>;

/// The back-off state of all clients.
pub struct Throttle {
    state: Mutex<State>,
}

/// How many of each kind of record are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Addresses tracked one by one.
    pub addresses: usize,
    /// User names tracked one by one.
    pub users: usize,
    /// Trusted addresses remembered.
    pub trusted: usize,
}

/// Which bcrypt workers a check runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The address logged in lately.
    Trusted,
    /// Neither the address nor the user failed lately.
    Clean,
    /// The address or the user failed lately, or has a check running.
    Suspect,
}

/// What to do with a request whose credentials are not remembered as verified, or are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Let it through: its credentials are remembered, and its address may use them.
    Pass,
    /// Check its credentials ([`Throttle::admit`]).
    Check,
    /// Refuse it for this long.
    Wait(Duration),
}

/// A credential check that was let through: holds its place among the checks running (released
/// when finished or dropped).
pub struct Ticket {
    throttle: Arc<Throttle>,
    addr: Slot<AddrKey>,
    user: Slot<String>,
    pool: Pool,
    done: bool,
}

struct State {
    caps: Caps,
    addrs: Tracked<AddrKey>,
    users: Tracked<String>,
    /// When each trusted address last logged in.
    trusted: HashMap<AddrKey, Instant>,
    trusted_swept: Option<Instant>,
}

/// Records by key, at most `cap` of them, then one shared record.
struct Tracked<K> {
    map: HashMap<K, Record>,
    overflow: Record,
    cap: usize,
    swept: Option<Instant>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    failures: u32,
    last_failure: Option<Instant>,
    in_flight: u32,
}

/// Where a check's record is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot<K> {
    Key(K),
    Overflow,
}

/// How often a full map may be swept for forgotten records.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The wait given to a check refused because too many run for its address or user.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// The tracking key of a client address.
pub fn addr_key(ip: Option<IpAddr>) -> AddrKey {
    ip.map(|ip| match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    })
}

/// The tracking key of a user name (cut to [`AUTH_MAX_USER`] characters).
fn user_key(user: &str) -> String {
    user.chars().take(AUTH_MAX_USER).collect()
}

/// The back-off after `failures` failures (zero while some are free).
fn backoff(failures: u32) -> Duration {
    if failures < AUTH_FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (failures - AUTH_FREE_FAILURES).min(20);
    AUTH_BACKOFF_FIRST
        .checked_mul(1 << doublings)
        .unwrap_or(AUTH_BACKOFF_MAX)
        .min(AUTH_BACKOFF_MAX)
}

// === impl Caps ===

impl Default for Caps {
    fn default() -> Self {
        Self {
            addresses: AUTH_TRACKED_ADDRESSES,
            users: AUTH_TRACKED_USERS,
            trusted: AUTH_TRUSTED_ADDRESSES,
        }
    }
}

// === impl Record ===

impl Record {
    /// Forgets old failures.
    fn refresh(&mut self, now: Instant) {
        if self.forgotten(now) {
            self.failures = 0;
            self.last_failure = None;
        }
    }

    /// Whether nothing of this record matters any more.
    fn forgotten(&self, now: Instant) -> bool {
        self.in_flight == 0
            && self
                .last_failure
                .is_none_or(|t| now.saturating_duration_since(t) >= AUTH_FAILURE_MEMORY)
    }

    /// How long it is still backed off.
    fn blocked(&self, now: Instant) -> Option<Duration> {
        let last = self.last_failure?;
        let wait = backoff(self.failures);
        if wait.is_zero() || now.saturating_duration_since(last) >= AUTH_FAILURE_MEMORY {
            return None;
        }
        let until = last + wait;
        (now < until).then(|| until - now)
    }

    /// Whether another check may start now.
    fn room(&self) -> bool {
        self.in_flight < AUTH_FREE_FAILURES.saturating_sub(self.failures).max(1)
    }

    fn suspect(&self) -> bool {
        self.failures > 0 || self.in_flight > 0
    }

    fn fail(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(now);
    }
}

// === impl Tracked ===

impl<K: Hash + Eq + Clone> Tracked<K> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            overflow: Record::default(),
            cap,
            swept: None,
        }
    }

    /// The record `key` uses, read-only (`None`: a clean one).
    fn get(&self, key: &K) -> Option<&Record> {
        match self.map.get(key) {
            Some(r) => Some(r),
            None if self.map.len() >= self.cap => Some(&self.overflow),
            None => None,
        }
    }

    /// The slot of `key`'s record, made if needed.
    fn slot(&mut self, key: &K, now: Instant) -> Slot<K> {
        if self.map.contains_key(key) {
            return Slot::Key(key.clone());
        }
        if self.map.len() >= self.cap
            && self
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
        {
            self.swept = Some(now);
            self.map.retain(|_, r| !r.forgotten(now));
        }
        if self.map.len() < self.cap {
            self.map.insert(key.clone(), Record::default());
            Slot::Key(key.clone())
        } else {
            Slot::Overflow
        }
    }

    fn record(&mut self, slot: &Slot<K>) -> &mut Record {
        match slot {
            // A record with a check running is never swept; `or_default` only guards the invariant.
            Slot::Key(k) => self.map.entry(k.clone()).or_default(),
            Slot::Overflow => &mut self.overflow,
        }
    }
}

// === impl State ===

impl State {
    fn is_trusted(&self, addr: &AddrKey, now: Instant) -> bool {
        self.trusted
            .get(addr)
            .is_some_and(|t| now.saturating_duration_since(*t) < AUTH_TRUSTED_FOR)
    }

    fn trust(&mut self, addr: AddrKey, now: Instant) {
        if let Some(t) = self.trusted.get_mut(&addr) {
            *t = now;
            return;
        }
        if self.trusted.len() >= self.caps.trusted
            && self
                .trusted_swept
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
        {
            self.trusted_swept = Some(now);
            self.trusted
                .retain(|_, t| now.saturating_duration_since(*t) < AUTH_TRUSTED_FOR);
        }
        // When full of addresses that logged in within the hour, a new one is simply not trusted.
        if self.trusted.len() < self.caps.trusted {
            self.trusted.insert(addr, now);
        }
    }

    /// How long `addr` (and, unless `trusted`, `user`) is still backed off.
    fn blocked(&self, addr: &AddrKey, user: &str, trusted: bool, now: Instant) -> Option<Duration> {
        let by_addr = self.addrs.get(addr).and_then(|r| r.blocked(now));
        let by_user = if trusted {
            None
        } else {
            self.users.get(&user_key(user)).and_then(|r| r.blocked(now))
        };
        by_addr.max(by_user)
    }
}

// === impl Throttle ===

impl Default for Throttle {
    fn default() -> Self {
        Self::new(Caps::default())
    }
}

impl Throttle {
    /// No failures yet; at most `caps` records of each kind.
    pub fn new(caps: Caps) -> Self {
        Self {
            state: Mutex::new(State {
                caps,
                addrs: Tracked::new(caps.addresses),
                users: Tracked::new(caps.users),
                trusted: HashMap::new(),
                trusted_swept: None,
            }),
        }
    }

    /// What to do with a request from `addr` for `user`, whose credentials are (`remembered`) or
    /// are not verified already. A pass makes `addr` trusted.
    pub fn before(&self, addr: AddrKey, user: &str, remembered: bool, now: Instant) -> Before {
        let mut s = self.state.lock();
        let trusted = s.is_trusted(&addr, now);
        if remembered && trusted {
            s.trust(addr, now);
            return Before::Pass;
        }
        if let Some(wait) = s.blocked(&addr, user, trusted, now) {
            return Before::Wait(wait);
        }
        if remembered {
            s.trust(addr, now);
            return Before::Pass;
        }
        Before::Check
    }

    /// Lets a check of `user`'s password from `addr` start, or says how long to wait.
    ///
    /// # Errors
    /// The wait, when the address or user is backed off or has as many checks running as it may.
    pub fn admit(
        self: &Arc<Self>,
        addr: AddrKey,
        user: &str,
        now: Instant,
    ) -> Result<Ticket, Duration> {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let trusted = s.is_trusted(&addr, now);
        let user = user_key(user);
        if let Some(wait) = s.blocked(&addr, &user, trusted, now) {
            return Err(wait);
        }
        let a_slot = s.addrs.slot(&addr, now);
        let a = s.addrs.record(&a_slot);
        a.refresh(now);
        if !a.room() {
            return Err(BUSY_WAIT);
        }
        let mut suspect = a.suspect();
        let u_slot = s.users.slot(&user, now);
        let u = s.users.record(&u_slot);
        u.refresh(now);
        if !trusted {
            if !u.room() {
                return Err(BUSY_WAIT);
            }
            suspect |= u.suspect();
        }
        u.in_flight += 1;
        s.addrs.record(&a_slot).in_flight += 1;
        let pool = match (trusted, suspect) {
            (true, _) => Pool::Trusted,
            (false, true) => Pool::Suspect,
            (false, false) => Pool::Clean,
        };
        Ok(Ticket {
            throttle: self.clone(),
            addr: a_slot,
            user: u_slot,
            pool,
            done: false,
        })
    }

    /// Records a failure from `addr` that needed no check (malformed credentials); returns the
    /// back-off it starts, if any.
    pub fn failed_unchecked(&self, addr: AddrKey, now: Instant) -> Option<Duration> {
        let mut s = self.state.lock();
        let slot = s.addrs.slot(&addr, now);
        let r = s.addrs.record(&slot);
        r.refresh(now);
        r.fail(now);
        r.blocked(now)
    }

    /// How long `addr` is backed off for its own failures (malformed credentials are refused
    /// without a check, but not while it is).
    pub fn addr_blocked(&self, addr: AddrKey, now: Instant) -> Option<Duration> {
        self.state
            .lock()
            .addrs
            .get(&addr)
            .and_then(|r| r.blocked(now))
    }

    /// How many addresses, users and trusted addresses are tracked one by one.
    pub fn tracked(&self) -> (usize, usize, usize) {
        let s = self.state.lock();
        (s.addrs.map.len(), s.users.map.len(), s.trusted.len())
    }
}

// === impl Ticket ===

impl Ticket {
    /// The workers this check runs on.
    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// Records the check's outcome at `now`; after a failure, returns the back-off it starts (of
    /// the address or the user, the longer), if any.
    pub fn finish(mut self, ok: bool, addr: AddrKey, now: Instant) -> Option<Duration> {
        self.done = true;
        let mut guard = self.throttle.state.lock();
        let s = &mut *guard;
        let a = s.addrs.record(&self.addr);
        a.in_flight = a.in_flight.saturating_sub(1);
        if !ok {
            a.fail(now);
        }
        let by_addr = a.blocked(now);
        let u = s.users.record(&self.user);
        u.in_flight = u.in_flight.saturating_sub(1);
        if ok {
            s.trust(addr, now);
            return None;
        }
        u.fail(now);
        by_addr.max(u.blocked(now))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Abandoned (the client went away): the check neither failed nor succeeded.
        let mut s = self.throttle.state.lock();
        let a = s.addrs.record(&self.addr);
        a.in_flight = a.in_flight.saturating_sub(1);
        let u = s.users.record(&self.user);
        u.in_flight = u.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> AddrKey {
        addr_key(Some(s.parse().unwrap()))
    }

    #[test]
    fn backoff_starts_after_the_free_failures_and_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(AUTH_FREE_FAILURES - 1), Duration::ZERO);
        assert_eq!(backoff(AUTH_FREE_FAILURES), AUTH_BACKOFF_FIRST);
        assert_eq!(backoff(AUTH_FREE_FAILURES + 1), AUTH_BACKOFF_FIRST * 2);
        assert_eq!(backoff(AUTH_FREE_FAILURES + 3), AUTH_BACKOFF_FIRST * 8);
        assert_eq!(backoff(u32::MAX), AUTH_BACKOFF_MAX);
    }

    #[test]
    fn ipv6_is_tracked_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(ip("2001:db8:1:2:3:4:5:6"), ip("2001:db8:1:2::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.7"), ip("192.0.2.7"));
    }

    #[test]
    fn an_address_is_backed_off_after_its_free_failures_and_never_checked_meanwhile() {
        let t = Arc::new(Throttle::default());
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        for i in 0..AUTH_FREE_FAILURES {
            assert_eq!(t.before(a, &format!("u{i}"), false, t0), Before::Check);
            let ticket = t.admit(a, &format!("u{i}"), t0).unwrap();
            let started = ticket.finish(false, a, t0);
            assert_eq!(started.is_some(), i + 1 == AUTH_FREE_FAILURES, "{i}");
        }
        assert_eq!(
            t.before(a, "x", false, t0),
            Before::Wait(AUTH_BACKOFF_FIRST)
        );
        assert!(t.admit(a, "x", t0).is_err());
        // Another address and user are not held back.
        assert_eq!(t.before(ip("192.0.2.2"), "y", false, t0), Before::Check);
        // After the back-off: one check, which fails and doubles it.
        let t1 = t0 + AUTH_BACKOFF_FIRST;
        let ticket = t.admit(a, "x", t1).unwrap();
        assert_eq!(ticket.pool(), Pool::Suspect);
        assert_eq!(ticket.finish(false, a, t1), Some(AUTH_BACKOFF_FIRST * 2));
        // Forgotten after a quiet while.
        let later = t1 + AUTH_FAILURE_MEMORY;
        assert_eq!(t.before(a, "x", false, later), Before::Check);
        assert_eq!(t.admit(a, "x", later).unwrap().pool(), Pool::Clean);
    }

    #[test]
    fn concurrent_checks_are_limited_to_the_free_failures_left() {
        let t = Arc::new(Throttle::default());
        let a = ip("192.0.2.1");
        let now = Instant::now();
        let tickets: Vec<Ticket> = (0..AUTH_FREE_FAILURES)
            .map(|i| t.admit(a, &format!("u{i}"), now).unwrap())
            .collect();
        assert_eq!(tickets[0].pool(), Pool::Clean);
        assert!(tickets[1..].iter().all(|t| t.pool() == Pool::Suspect));
        assert_eq!(t.admit(a, "more", now).err(), Some(BUSY_WAIT));
        drop(tickets);
        // Dropped tickets are neither failures nor successes.
        assert_eq!(t.admit(a, "more", now).unwrap().pool(), Pool::Clean);
    }

    #[test]
    fn a_user_is_backed_off_across_addresses_but_not_at_a_trusted_address() {
        let t = Arc::new(Throttle::default());
        let now = Instant::now();
        let home = ip("198.51.100.1");
        t.admit(home, "alice", now).unwrap().finish(true, home, now);
        for i in 0..AUTH_FREE_FAILURES {
            let a = ip(&format!("203.0.113.{i}"));
            t.admit(a, "alice", now).unwrap().finish(false, a, now);
        }
        assert!(matches!(
            t.before(ip("203.0.113.200"), "alice", false, now),
            Before::Wait(_)
        ));
        assert!(t.admit(ip("203.0.113.200"), "alice", now).is_err());
        assert_eq!(
            t.before(ip("203.0.113.200"), "bob", false, now),
            Before::Check
        );
        // alice's own address: checked, on the trusted workers.
        assert_eq!(t.before(home, "alice", false, now), Before::Check);
        assert_eq!(t.admit(home, "alice", now).unwrap().pool(), Pool::Trusted);
    }

    #[test]
    fn remembered_credentials_pass_a_backed_off_address_only_when_it_is_trusted() {
        let t = Arc::new(Throttle::default());
        let now = Instant::now();
        let lb = ip("192.0.2.10");
        let stranger = ip("192.0.2.11");
        t.admit(lb, "alice", now).unwrap().finish(true, lb, now);
        for a in [lb, stranger] {
            for _ in 0..AUTH_FREE_FAILURES {
                t.failed_unchecked(a, now);
            }
        }
        assert_eq!(t.before(lb, "alice", true, now), Before::Pass);
        assert!(matches!(
            t.before(stranger, "alice", true, now),
            Before::Wait(_)
        ));
        assert!(matches!(t.before(lb, "alice", false, now), Before::Wait(_)));
    }

    #[test]
    fn maps_stay_bounded_under_a_flood_and_keep_the_records_they_have() {
        let t = Arc::new(Throttle::default());
        let now = Instant::now();
        // alice is being guessed from one address.
        let a = ip("192.0.2.1");
        for _ in 0..AUTH_FREE_FAILURES {
            let ticket = t.admit(ip("192.0.2.1"), "alice", now).unwrap();
            ticket.finish(false, a, now);
        }
        // A flood of distinct addresses and names, each failing once.
        for i in 0..(AUTH_TRACKED_ADDRESSES + AUTH_TRACKED_USERS) as u32 {
            let addr = addr_key(Some(IpAddr::from((0x0a00_0000 + i).to_be_bytes())));
            if let Ok(ticket) = t.admit(addr, &format!("user-{i}"), now) {
                ticket.finish(false, addr, now);
            }
            t.failed_unchecked(addr, now);
        }
        let (addrs, users, trusted) = t.tracked();
        assert!(addrs <= AUTH_TRACKED_ADDRESSES, "{addrs}");
        assert!(users <= AUTH_TRACKED_USERS, "{users}");
        assert_eq!(trusted, 0);
        // alice's record was not pushed out: still backed off.
        assert!(matches!(
            t.before(ip("198.51.100.9"), "alice", false, now),
            Before::Wait(_)
        ));
        // Once forgotten, the records are swept and new ones tracked again.
        let later = now + AUTH_FAILURE_MEMORY;
        let fresh = ip("198.51.100.77");
        t.admit(fresh, "carol", later)
            .unwrap()
            .finish(false, fresh, later);
        assert_eq!(t.tracked().0, 1);
    }

    #[test]
    fn trusted_addresses_are_bounded() {
        let t = Arc::new(Throttle::new(Caps {
            addresses: 10,
            users: 10,
            trusted: 3,
        }));
        let now = Instant::now();
        for i in 0..10u8 {
            let a = addr_key(Some(IpAddr::from([192, 0, 2, i])));
            t.admit(a, "alice", now).unwrap().finish(true, a, now);
        }
        assert_eq!(t.tracked().2, 3);
        let later = now + AUTH_TRUSTED_FOR;
        let a = ip("198.51.100.1");
        t.admit(a, "alice", later).unwrap().finish(true, a, later);
        assert_eq!(t.tracked().2, 1);
    }
}
