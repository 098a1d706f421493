//! End-to-end tests: the real `hermes` binary, a real Docker engine, the real OpenSSH
//! client and an in-process russh client.

#[macro_use]
extern crate hermes_test_support;

use hermes_test_support::{client, events, harness, ports};

mod auditor;
mod auth;
mod bounds;
mod box_sshd;
mod capture;
mod channels;
mod compose;
mod deploy;
mod differential;
mod diskfull;
mod egress;
mod egress_dns;
mod egress_fetch;
mod egress_forward;
mod egress_tls;
mod flood;
mod isolation;
mod lifecycle;
mod machine;
mod operations;
mod pipes;
mod policy;
mod pool;
mod pressure;
mod proxy;
mod recovery;
mod reference;
mod resources;
mod shell;
mod shutdown;
mod standby;
mod systemd;
mod timeouts;
mod tls;
mod transport;
mod typeahead;
