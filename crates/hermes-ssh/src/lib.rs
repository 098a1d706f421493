//! The SSH front end: russh behind the core's traits.
//!
//! It owns everything that speaks SSH: the persona's banner and algorithm lists, host
//! keys, the accept loop, and the translation of protocol callbacks into calls on
//! [`hermes_core::session`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod algorithms;
mod box_client;
mod box_stream;
mod box_taken;
mod channel;
mod handler;
pub mod hostkeys;
mod ident;
mod kexinit;
pub mod proxy_protocol;
mod read_ahead;
mod server;
mod stream;

pub use algorithms::{AlgorithmNames, Offer, build_offer};
pub use box_client::BoxSshClient;
pub use server::{ProxySettings, SshServer, SshSettings};
