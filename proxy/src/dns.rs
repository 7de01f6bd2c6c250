//! Where an address's name points, known before a request needs it.
//!
//! An address in the config (`inbound.app`, `outbound.routes[].address`) may be a DNS name.
//! Each name gets a task that asks the system resolver (`getaddrinfo`, so `/etc/hosts`,
//! `resolv.conf` search lists and nsswitch all apply) at start, then every `dns_refresh`, and
//! again soon after a connection to it fails. Requests never wait for DNS, with one exception:
//! a connection made before the first answer is in waits for it, up to its connect timeout.
//!
//! ```text
//!   resolver task ──lookup──▶ watch::Sender<Answer> ──▶ Resolved::addrs() (each new connection)
//!        ▲                                                   │ every address failed
//!        └────────────── Notify (resolve again now) ◀────────┘
//! ```
//!
//! A failed lookup after a good one keeps the last good addresses, so a DNS outage does not
//! become an outage of every destination; a name that has never resolved fails each connection
//! with an error naming it (a 502). Where the name points only says where to connect: the
//! outbound side still checks that the server proves the route's SPIFFE ID.
//!
//! An IP address needs none of this: it is one fixed answer, and no task.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hopgate_config::{Address, Host};
use tokio::sync::{Notify, watch};

/// The least time between two lookups of one name, however many connections fail.
const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// How long one lookup may take before it counts as failed (the resolver's own timeouts are
/// usually shorter: 5 s per server in `resolv.conf`).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// An address and what it resolves to now. Cheap to clone; the lookups stop when the last
/// clone is dropped.
#[derive(Clone)]
pub(crate) struct Resolved {
    address: Arc<Address>,
    answers: watch::Receiver<Answer>,
    retry: Arc<Notify>,
}

/// The latest answer for a name.
#[derive(Clone, Debug)]
enum Answer {
    /// No lookup has finished yet.
    Pending,
    /// The addresses to try, in the resolver's order (RFC 6724 for `getaddrinfo`).
    Addrs(Arc<[SocketAddr]>),
    /// The name has never resolved: why, as the resolver said.
    Failed(Arc<str>),
}

// === impl Resolved ===

impl Resolved {
    /// `address`, resolved now and then every `refresh` when it is a name. Starts a task on
    /// the current tokio runtime for a name.
    pub(crate) fn new(address: &Address, refresh: Duration) -> Self {
        let retry = Arc::new(Notify::new());
        let answers = match address.host() {
            Host::Ip(ip) => {
                let addr = SocketAddr::new(*ip, address.port());
                watch::channel(Answer::Addrs(Arc::from([addr]))).1
            }
            Host::Name(name) => {
                let (tx, rx) = watch::channel(Answer::Pending);
                let task = Lookups {
                    name: name.as_str().to_owned(),
                    address: address.clone(),
                    refresh,
                    retry: Arc::clone(&retry),
                };
                tokio::spawn(task.run(tx));
                rx
            }
        };
        Self {
            address: Arc::new(address.clone()),
            answers,
            retry,
        }
    }

    /// The address as configured.
    pub(crate) fn address(&self) -> &Address {
        &self.address
    }

    /// The addresses to try now, waiting at most `wait` for a name's first answer.
    ///
    /// # Errors
    /// A `NotFound` error naming the address when the name has not resolved (yet).
    pub(crate) async fn addrs(&self, wait: Duration) -> io::Result<Arc<[SocketAddr]>> {
        let mut answers = self.answers.clone();
        let answer = answers.borrow_and_update().clone();
        let answer = match answer {
            Answer::Pending => {
                let first =
                    tokio::time::timeout(wait, answers.wait_for(|a| !matches!(a, Answer::Pending)))
                        .await;
                match first {
                    Ok(Ok(answer)) => answer.clone(),
                    Ok(Err(_)) | Err(_) => Answer::Pending,
                }
            }
            answer => answer,
        };
        match answer {
            Answer::Addrs(addrs) => Ok(addrs),
            Answer::Pending => Err(self.unresolved("no answer from the resolver yet")),
            Answer::Failed(why) => {
                // Ask again soon: the name may have been added since.
                self.retry.notify_one();
                Err(self.unresolved(&why))
            }
        }
    }

    /// Whether `addr` is among the addresses now, waiting at most `wait` for a name's first
    /// answer.
    pub(crate) async fn resolves_to(&self, addr: SocketAddr, wait: Duration) -> bool {
        let current = |answer: &Answer| match answer {
            Answer::Addrs(addrs) => Some(addrs.contains(&addr)),
            Answer::Failed(_) => Some(false),
            Answer::Pending => None,
        };
        if let Some(known) = current(&self.answers.borrow()) {
            return known;
        }
        self.addrs(wait)
            .await
            .is_ok_and(|addrs| addrs.contains(&addr))
    }

    /// Says that no address of this name could be connected to: look it up again soon, it
    /// may have moved.
    pub(crate) fn connect_failed(&self) {
        if matches!(self.address.host(), Host::Name(_)) {
            self.retry.notify_one();
        }
    }

    fn unresolved(&self, why: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{}` does not resolve: {why}", self.address),
        )
    }
}

impl fmt::Debug for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved")
            .field("address", &self.address.to_string())
            .field("answer", &*self.answers.borrow())
            .finish()
    }
}

/// The lookups of one name, until every [`Resolved`] for it is dropped.
struct Lookups {
    /// The name looked up, with the port of `address`, which the log lines show.
    name: String,
    address: Address,
    refresh: Duration,
    retry: Arc<Notify>,
}

impl Lookups {
    async fn run(self, tx: watch::Sender<Answer>) {
        // The failure last reported, so a lasting one is logged once, not every refresh.
        let mut failing: Option<String> = None;
        loop {
            let outcome = self.lookup().await;
            self.publish(&tx, outcome, &mut failing);
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(self.refresh) => {}
                () = self.retry.notified() => {}
            }
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(MIN_INTERVAL) => {}
            }
        }
    }

    /// Publishes a lookup's outcome and logs what changed.
    fn publish(
        &self,
        tx: &watch::Sender<Answer>,
        outcome: Result<Vec<SocketAddr>, String>,
        failing: &mut Option<String>,
    ) {
        let at = &self.address;
        match outcome {
            Ok(new) => {
                failing.take();
                tx.send_if_modified(|answer| {
                    if matches!(answer, Answer::Addrs(old) if **old == *new) {
                        return false;
                    }
                    tracing::info!(address = %at, resolved = ?new, "name resolved");
                    *answer = Answer::Addrs(Arc::from(new));
                    true
                });
            }
            Err(why) => {
                tx.send_if_modified(|answer| match answer {
                    // Keep the last good answer through a failed lookup.
                    Answer::Addrs(_) => false,
                    Answer::Failed(old) if **old == *why => false,
                    Answer::Failed(_) | Answer::Pending => {
                        *answer = Answer::Failed(Arc::from(why.as_str()));
                        true
                    }
                });
                if failing.as_deref() == Some(why.as_str()) {
                    return;
                }
                if !matches!(&*tx.borrow(), Answer::Addrs(_)) {
                    tracing::warn!(address = %at, error = %why, "name does not resolve; connections to it fail until it does");
                } else {
                    tracing::warn!(
                        address = %at,
                        error = %why,
                        "name does not resolve now; connections keep going to the addresses it last resolved to"
                    );
                }
                *failing = Some(why);
            }
        }
    }

    async fn lookup(&self) -> Result<Vec<SocketAddr>, String> {
        let lookup = tokio::net::lookup_host((self.name.clone(), self.address.port()));
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Err(_) => Err(format!(
                "the resolver gave no answer in {}s",
                LOOKUP_TIMEOUT.as_secs()
            )),
            Ok(Err(err)) => Err(err.to_string()),
            Ok(Ok(addrs)) => {
                let mut unique: Vec<SocketAddr> = Vec::new();
                for addr in addrs {
                    if !unique.contains(&addr) {
                        unique.push(addr);
                    }
                }
                if unique.is_empty() {
                    Err("the resolver returned no address".to_owned())
                } else {
                    Ok(unique)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
