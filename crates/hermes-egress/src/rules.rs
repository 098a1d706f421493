//! The gateway namespace's firewall, loaded with one `iptables-restore` there: every
//! TCP connection from the box goes to Hermes's gateway listener, DNS to Hermes's
//! resolver, everything else addressed to the gateway is dropped or rejected. The
//! namespace has no other link and no forwarding: nothing is routed anywhere.

use hermes_core::config::RefusedAnswer;

use crate::command::{self, CommandError};
use crate::link::GATEWAY_LINK;
use crate::netns;

/// The port the gateway's TCP listener binds in the namespace.
pub const TCP_PORT: u16 = 7;
/// The port of the resolver (`udp 53` to any address is redirected there).
pub const DNS_PORT: u16 = 53;
/// The TFTP listener's port: the box's `udp 69` to any address is delivered to it
/// unchanged (no REDIRECT), so it learns the server the box addressed.
pub const TFTP_PORT: u16 = 69;
/// The routing table that makes every address local for the box's UDP.
const TFTP_TABLE: &str = "169";

/// The `iptables-restore` input; with `tftp`, the box's TFTP requests and its
/// answers to Hermes's transfers (ACKs, an established flow) are accepted too.
pub fn script(refused: RefusedAnswer, tftp: bool) -> String {
    let tftp_rules = if tftp {
        format!(
            "-A INPUT -i {GATEWAY_LINK} -p udp --dport {TFTP_PORT} -j ACCEPT\n\
             -A INPUT -i {GATEWAY_LINK} -p udp -m conntrack --ctstate ESTABLISHED -j ACCEPT\n"
        )
    } else {
        String::new()
    };
    let refuse_rest = match refused {
        RefusedAnswer::Drop => String::new(),
        RefusedAnswer::Reject => format!(
            "-A INPUT -i {GATEWAY_LINK} -p udp -j REJECT --reject-with icmp-port-unreachable\n\
             -A INPUT -i {GATEWAY_LINK} -j REJECT --reject-with icmp-admin-prohibited\n"
        ),
    };
    format!(
        "*nat\n\
         :PREROUTING ACCEPT [0:0]\n\
         :INPUT ACCEPT [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         :POSTROUTING ACCEPT [0:0]\n\
         -A PREROUTING -i {GATEWAY_LINK} -p tcp -j REDIRECT --to-ports {TCP_PORT}\n\
         -A PREROUTING -i {GATEWAY_LINK} -p udp --dport 53 -j REDIRECT --to-ports {DNS_PORT}\n\
         COMMIT\n\
         *filter\n\
         :INPUT DROP [0:0]\n\
         :FORWARD DROP [0:0]\n\
         :OUTPUT ACCEPT [0:0]\n\
         -A INPUT -i lo -j ACCEPT\n\
         -A INPUT -i {GATEWAY_LINK} -p tcp --dport {TCP_PORT} -j ACCEPT\n\
         -A INPUT -i {GATEWAY_LINK} -p udp --dport {DNS_PORT} -j ACCEPT\n\
         {tftp_rules}\
         {refuse_rest}\
         COMMIT\n"
    )
}

/// Loads the rules into the gateway namespace `gateway`, replacing what was there;
/// with `tftp`, the box's UDP to any address is delivered locally (the filter then
/// decides), so that TFTP transfers keep the server's address both ways.
pub fn apply(gateway: &str, refused: RefusedAnswer, tftp: bool) -> Result<(), CommandError> {
    let namespace = netns::open(gateway).map_err(|source| CommandError::Namespace {
        path: gateway.to_owned(),
        source,
    })?;
    command::run_at(
        Some(&namespace),
        "iptables-restore",
        &[],
        &script(refused, tftp),
    )?;
    if tftp {
        let rule = [
            "rule",
            "add",
            "iif",
            GATEWAY_LINK,
            "ipproto",
            "udp",
            "lookup",
            TFTP_TABLE,
        ];
        // A namespace reused after a restart has them already.
        let _ = command::run_at(
            Some(&namespace),
            "ip",
            &[
                "rule",
                "del",
                "iif",
                GATEWAY_LINK,
                "ipproto",
                "udp",
                "lookup",
                TFTP_TABLE,
            ],
            "",
        );
        command::run_at(Some(&namespace), "ip", &rule, "")?;
        let route = [
            "route",
            "replace",
            "local",
            "0.0.0.0/0",
            "dev",
            "lo",
            "table",
            TFTP_TABLE,
        ];
        command::run_at(Some(&namespace), "ip", &route, "")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_tcp_goes_to_the_listener_and_nothing_is_forwarded() {
        let drop = script(RefusedAnswer::Drop, false);
        assert!(drop.contains("-A PREROUTING -i gw0 -p tcp -j REDIRECT --to-ports 7\n"));
        assert!(drop.contains(":FORWARD DROP"));
        assert!(!drop.contains("REJECT --reject"));
        assert!(script(RefusedAnswer::Reject, false).contains("-j REJECT --reject-with"));
        assert!(!drop.contains("--dport 69"));
    }

    #[test]
    fn tftp_requests_and_their_transfers_are_accepted_before_the_refusals() {
        let rules = script(RefusedAnswer::Reject, true);
        let request = rules.find("-p udp --dport 69 -j ACCEPT").expect("request");
        let acks = rules.find("--ctstate ESTABLISHED -j ACCEPT").expect("acks");
        let reject = rules.find("-j REJECT").expect("reject");
        assert!(request < reject && acks < reject);
        // Not redirected: the listener must see the server's address.
        assert!(!rules.contains("--dport 69 -j REDIRECT"));
    }
}
