//! The box's passive data connections. A `PASV` reply names the server's address
//! (as the box knows it) and a port Hermes picked; while it waits, the box's
//! firewall redirects the box's connection to exactly that address and port to the
//! gateway, which hands it to the waiting transfer before its usual dispatch. Bounded: a few ports per box, each
//! expiring, and one per control connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::hole::{Hole, HoleError};
use crate::netns::{self, Naming};
use crate::seams::BoxConnection;

/// Data ports one box may have waiting at once.
pub const PER_BOX: usize = 8;
/// Data ports waiting on the whole sensor.
pub const TOTAL: usize = 4096;
/// Data ports one box may open per [`OPENINGS_WINDOW`]: each opening runs the
/// firewall's tool, so a box looping on PASV costs itself, not the sensor.
pub const OPENINGS_PER_WINDOW: u32 = 30;
/// The window [`OPENINGS_PER_WINDOW`] counts in.
pub const OPENINGS_WINDOW: Duration = Duration::from_secs(60);
/// How long a data port waits for the box's connection.
pub const EXPIRY: Duration = Duration::from_secs(30);
/// Where the ports Hermes names are picked (vsftpd, unconfigured, uses any
/// unprivileged port; these look like it).
const RANGE: std::ops::RangeInclusive<u16> = 30000..=60999;

type Key = (String, SocketAddr);

struct Waiting {
    sender: oneshot::Sender<TcpStream>,
    expires: Instant,
    id: u64,
}

/// The data ports waiting for boxes' connections.
#[derive(Default)]
pub struct DataPorts {
    inner: Mutex<Inner>,
    /// The boxes' gateway namespaces, whose firewalls a waiting port is opened in
    /// (None: nothing to open, as in the unit tests, where every connection comes).
    firewalls: Option<Naming>,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<Key, Waiting>,
    next_id: u64,
    /// Per box: when its current window began, and the ports opened in it.
    openings: HashMap<String, (Instant, u32)>,
}

/// A data port waiting for the box; forgotten (and closed in the firewall) when
/// dropped.
pub struct Pending {
    /// Declared first: the firewall's opening closes before the port is forgotten.
    hole: Option<Hole>,
    ports: Arc<DataPorts>,
    key: Key,
    id: u64,
    receiver: oneshot::Receiver<TcpStream>,
    expires: Instant,
}

impl Pending {
    /// The port the box is told.
    pub fn port(&self) -> u16 {
        self.key.1.port()
    }

    /// The box's data connection, once it comes (None when it did not in time).
    pub async fn connection(&mut self) -> Option<TcpStream> {
        tokio::time::timeout_at(self.expires, &mut self.receiver)
            .await
            .ok()
            .and_then(Result::ok)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut inner = self.ports.lock();
        if inner
            .waiting
            .get(&self.key)
            .is_some_and(|w| w.id == self.id)
        {
            inner.waiting.remove(&self.key);
        }
    }
}

impl DataPorts {
    /// Data ports opened in the firewalls of the namespaces `naming` names.
    pub(crate) fn in_firewalls(naming: Naming) -> Self {
        DataPorts {
            inner: Mutex::default(),
            firewalls: Some(naming),
        }
    }

    /// Opens `pending`'s port in its box's firewall (nothing to do without
    /// firewalls); None when it cannot be.
    pub async fn open_in_firewall(&self, container: &str, mut pending: Pending) -> Option<Pending> {
        let Some(naming) = &self.firewalls else {
            return Some(pending);
        };
        let opened = match netns::open(&naming.name(container)) {
            Ok(namespace) => Hole::open(namespace, pending.key.1).await,
            Err(error) => Err(HoleError::Namespace(error)),
        };
        match opened {
            Ok(hole) => {
                pending.hole = Some(hole);
                Some(pending)
            }
            Err(error) => {
                tracing::warn!(target: "hermes::egress", %error, "cannot open an FTP data port in the box's firewall");
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new data port at `ip` for the box `container`, or None when the box (or
    /// the sensor) has as many waiting as it may.
    pub fn open(self: &Arc<Self>, container: &str, ip: IpAddr) -> Option<Pending> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner
            .waiting
            .retain(|_, w| w.expires > now && !w.sender.is_closed());
        let of_box = inner.waiting.keys().filter(|(c, _)| c == container).count();
        if of_box >= PER_BOX || inner.waiting.len() >= TOTAL {
            return None;
        }
        inner
            .openings
            .retain(|_, (began, _)| now.duration_since(*began) < OPENINGS_WINDOW);
        let (_, opened) = inner
            .openings
            .entry(container.to_owned())
            .or_insert((now, 0));
        if *opened >= OPENINGS_PER_WINDOW {
            return None;
        }
        *opened += 1;
        let mut rng = rand::rng();
        let key = (0..16)
            .map(|_| {
                (
                    container.to_owned(),
                    SocketAddr::new(ip, rng.random_range(RANGE)),
                )
            })
            .find(|key| !inner.waiting.contains_key(key))?;
        let (sender, receiver) = oneshot::channel();
        let expires = now + EXPIRY;
        inner.next_id += 1;
        let id = inner.next_id;
        inner.waiting.insert(
            key.clone(),
            Waiting {
                sender,
                expires,
                id,
            },
        );
        Some(Pending {
            hole: None,
            ports: Arc::clone(self),
            key,
            id,
            receiver,
            expires,
        })
    }

    /// Takes `connection` when a transfer waits for it (None then); otherwise
    /// gives it back for the usual dispatch.
    pub fn claim(&self, connection: BoxConnection) -> Option<BoxConnection> {
        let key = (
            connection.context.container_id.clone(),
            connection.destination,
        );
        let waiting = {
            let mut inner = self.lock();
            match inner.waiting.get(&key) {
                Some(w) if w.expires > Instant::now() => inner.waiting.remove(&key),
                _ => None,
            }
        };
        let Some(waiting) = waiting else {
            return Some(connection);
        };
        let BoxConnection {
            stream,
            destination,
            context,
        } = connection;
        match waiting.sender.send(stream) {
            Ok(()) => None,
            // The transfer went away meanwhile: an ordinary connection after all.
            Err(stream) => Some(BoxConnection {
                stream,
                destination,
                context,
            }),
        }
    }

    /// Data ports waiting now (for tests and bounds).
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}
