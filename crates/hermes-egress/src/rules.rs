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

/// The `iptables-restore` input.
pub fn script(refused: RefusedAnswer) -> String {
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
         {refuse_rest}\
         COMMIT\n"
    )
}

/// Loads the rules into the gateway namespace `gateway`, replacing what was there.
pub fn apply(gateway: &str, refused: RefusedAnswer) -> Result<(), CommandError> {
    command::run(
        Some(&netns::path(gateway)),
        "iptables-restore",
        &[],
        &script(refused),
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_tcp_goes_to_the_listener_and_nothing_is_forwarded() {
        let drop = script(RefusedAnswer::Drop);
        assert!(drop.contains("-A PREROUTING -i gw0 -p tcp -j REDIRECT --to-ports 7\n"));
        assert!(drop.contains(":FORWARD DROP"));
        assert!(!drop.contains("REJECT --reject"));
        assert!(script(RefusedAnswer::Reject).contains("-j REJECT --reject-with"));
    }
}
