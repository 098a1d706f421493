//! A session channel's place among `persona.max_sessions`, given back as soon as
//! the channel is closed, by either side, rather than when its task ends.
//!
//! sshd frees a session before it reads the client's next message once the close
//! has gone both ways, so a client that saw the close may open the next channel at
//! once. Hermes's channel task may still be winding down then (on a busy machine,
//! for a while): the place must not wait for it.

use std::io;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ClientChannel, CountedPlace};

/// The place, held while its channel lives (the channel's state and the client
/// below hold it); released at the first close.
pub(super) struct HeldPlace(Mutex<Option<CountedPlace>>);

impl HeldPlace {
    pub(super) fn new(place: CountedPlace) -> Arc<Self> {
        Arc::new(HeldPlace(Mutex::new(Some(place))))
    }

    fn release(&self) {
        let place = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(place);
    }
}

/// What the SSH adapter keeps per open session channel, to give the place back
/// when the client closes the channel, in the order the client's messages come.
/// Does not keep the place alive on its own.
#[derive(Clone)]
pub struct SessionPlace(Weak<HeldPlace>);

impl SessionPlace {
    pub(super) fn of(place: &Arc<HeldPlace>) -> Self {
        SessionPlace(Arc::downgrade(place))
    }

    /// The client closed the channel: its place is free for the next one.
    pub fn release(&self) {
        if let Some(place) = self.0.upgrade() {
            place.release();
        }
    }

    /// Whether the channel may still hold its place (its state lives).
    pub fn is_live(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// The client side of a session channel whose close gives its place back first, so
/// that the client never sees the close before the place is free.
pub(super) struct PlaceReleasingClient {
    pub(super) inner: Arc<dyn ClientChannel>,
    pub(super) place: Arc<HeldPlace>,
}

#[async_trait]
impl ClientChannel for PlaceReleasingClient {
    async fn data(&self, bytes: Bytes) -> io::Result<()> {
        self.inner.data(bytes).await
    }

    async fn stderr(&self, bytes: Bytes) -> io::Result<()> {
        self.inner.stderr(bytes).await
    }

    async fn exit_status(&self, status: u32) -> io::Result<()> {
        self.inner.exit_status(status).await
    }

    async fn eof(&self) -> io::Result<()> {
        self.inner.eof().await
    }

    async fn close(&self) -> io::Result<()> {
        self.place.release();
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    struct Silent;

    #[async_trait]
    impl ClientChannel for Silent {
        async fn data(&self, _: Bytes) -> io::Result<()> {
            Ok(())
        }
        async fn stderr(&self, _: Bytes) -> io::Result<()> {
            Ok(())
        }
        async fn exit_status(&self, _: u32) -> io::Result<()> {
            Ok(())
        }
        async fn eof(&self) -> io::Result<()> {
            Ok(())
        }
        async fn close(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn held(counter: &Arc<AtomicU32>) -> Arc<HeldPlace> {
        HeldPlace::new(CountedPlace::take(counter, 1).expect("a free place"))
    }

    #[tokio::test]
    async fn closing_towards_the_client_frees_the_place_while_the_channel_lives() {
        let counter = Arc::new(AtomicU32::new(0));
        let place = held(&counter);
        let client = PlaceReleasingClient {
            inner: Arc::new(Silent),
            place: Arc::clone(&place),
        };
        assert!(CountedPlace::take(&counter, 1).is_none());
        client.close().await.expect("close");
        assert_eq!(counter.load(Ordering::Acquire), 0);
        assert!(CountedPlace::take(&counter, 1).is_some());
        // A second close (the channel's end) gives back nothing more.
        client.close().await.expect("close");
        drop(place);
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_clients_close_frees_the_place_and_the_handle_does_not_hold_it() {
        let counter = Arc::new(AtomicU32::new(0));
        let place = held(&counter);
        let handle = SessionPlace::of(&place);
        assert!(handle.is_live());
        handle.release();
        assert_eq!(counter.load(Ordering::Acquire), 0);
        drop(place);
        assert!(!handle.is_live());
        handle.release();
        assert_eq!(counter.load(Ordering::Acquire), 0);

        // Without a close, the place lasts exactly as long as the channel's state.
        let place = held(&counter);
        let handle = SessionPlace::of(&place);
        assert_eq!(counter.load(Ordering::Acquire), 1);
        drop(place);
        assert_eq!(counter.load(Ordering::Acquire), 0);
        assert!(!handle.is_live());
    }
}
