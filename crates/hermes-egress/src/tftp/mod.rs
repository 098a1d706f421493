//! TFTP (`tftp -g`, `busybox tftp`): the wire format, Hermes's own client for the
//! upstream fetch, and the lock-step server that hands the captured file to the box.

pub mod answer;
pub mod client;
pub mod pktinfo;
pub mod serve;
pub mod wire;

pub use answer::{Bind, TftpAnswer, answer_box};
pub use client::{ClientError, ClientLimits, fetch};
pub use serve::{ServeError, serve};

#[cfg(test)]
mod tests;
