//! The core of Hermes: everything that decides and records, nothing that speaks SSH or
//! Docker. The SSH front end and the container engine are adapters (other crates) that
//! the core drives through the traits in [`sandbox`] and [`session`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod address_block;
pub mod admission;
pub mod auth;
pub mod box_sshd;
pub mod boxnet;
pub mod capture;
pub mod commands;
pub mod config;
pub mod escape;
pub mod events;
pub mod forward_gateway;
pub mod ids;
pub mod machines;
pub mod metrics;
pub mod past;
pub mod persona;
pub mod priority;
pub mod record;
pub mod recovery;
pub mod sandbox;
pub mod session;
pub mod shadow;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
