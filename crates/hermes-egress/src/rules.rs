//! The gateway namespace's firewall, loaded with one `iptables-restore` there. The
//! box's TCP to the ports Hermes takes goes to Hermes's gateway listener, its DNS to
//! Hermes's resolver; everything else the firewall answers itself as a firewall
//! would (no answer, or a reset or ICMP error), logging the first packet of each
//! flow to the packet log Hermes reads. The namespace has no other link and no
//! forwarding: nothing is routed anywhere.

use std::net::Ipv4Addr;

use hermes_core::config::RefusedAnswer;

use crate::command::{self, CommandError};
use crate::link::GATEWAY_LINK;
use crate::netns;
use crate::nflog;

/// The port the gateway's TCP listener binds in the namespace.
pub const TCP_PORT: u16 = 7;
/// The port of the resolver (`udp 53` to any address is redirected there).
pub const DNS_PORT: u16 = 53;
/// The TFTP listener's port: the box's `udp 69` to any address is delivered to it
/// unchanged (no REDIRECT), so it learns the server the box addressed.
pub const TFTP_PORT: u16 = 69;
/// The routing table that makes every address local for the box's traffic, so that
/// the firewall's INPUT chain answers for any destination.
const LOCAL_TABLE: &str = "169";
/// Packets logged per second per box past the burst (a flood costs the box, not
/// the sensor's event pipeline).
const LOGGED_PER_SECOND: u32 = 100;
/// Packets logged at once before the rate applies (a 1,000-port scan is logged
/// whole, with room for what came before it).
const LOGGED_BURST: u32 = 2000;
/// Ports per `multiport` match (iptables's own limit).
const MULTIPORT_MAX: usize = 15;

/// `iptables` arguments that insert (`open`) or delete the redirect of the box's
/// connections to `destination` (a waiting FTP data port) to Hermes's listener.
pub fn data_port_rule(open: bool, destination: std::net::SocketAddrV4) -> Vec<String> {
    let mut args: Vec<String> = vec!["-w".into(), "5".into(), "-t".into(), "nat".into()];
    if open {
        args.extend(["-I".into(), "PREROUTING".into(), "1".into()]);
    } else {
        args.extend(["-D".into(), "PREROUTING".into()]);
    }
    args.extend(
        [
            "-i",
            GATEWAY_LINK,
            "-p",
            "tcp",
            "-d",
            &destination.ip().to_string(),
            "--dport",
            &destination.port().to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &TCP_PORT.to_string(),
        ]
        .map(str::to_owned),
    );
    args
}

/// What the firewall of one box's gateway does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    /// The answer to what Hermes does not take.
    pub refused: RefusedAnswer,
    /// TCP ports redirected to Hermes's listener.
    pub taken_ports: Vec<u16>,
    /// Whether the box's TFTP requests are Hermes's (delivered, not logged).
    pub tftp: bool,
    /// Addresses on the box's link that answer a ping (its gateway and resolver).
    pub pingable: Vec<Ipv4Addr>,
    /// Bytes the packet log copies of each packet (headers and the payload's start).
    pub logged_bytes: u32,
    /// The box's network (`10.0.2.0/24`): not made local, so that a neighbour the
    /// box looks for on its link is not found (only the gateway's addresses are).
    pub link_network: String,
}

impl Firewall {
    /// The `iptables-restore` input.
    pub fn script(&self) -> String {
        let mut nat = String::new();
        let mut ports: Vec<u16> = self.taken_ports.clone();
        ports.sort_unstable();
        ports.dedup();
        for chunk in ports.chunks(MULTIPORT_MAX) {
            let list: Vec<String> = chunk.iter().map(u16::to_string).collect();
            nat.push_str(&format!(
                "-A PREROUTING -i {GATEWAY_LINK} -p tcp -m multiport --dports {} -j REDIRECT --to-ports {TCP_PORT}\n",
                list.join(",")
            ));
        }
        nat.push_str(&format!(
            "-A PREROUTING -i {GATEWAY_LINK} -p udp --dport 53 -j REDIRECT --to-ports {DNS_PORT}\n"
        ));
        if self.tftp {
            // Hermes's own: fetched and reported as such.
            nat.push_str(&format!(
                "-A PREROUTING -i {GATEWAY_LINK} -p udp --dport {TFTP_PORT} -j RETURN\n"
            ));
        }
        for address in &self.pingable {
            nat.push_str(&format!(
                "-A PREROUTING -i {GATEWAY_LINK} -d {address} -p icmp --icmp-type echo-request -j RETURN\n"
            ));
        }
        // The nat table sees only the first packet of each flow: one log line per
        // attempt, not per retransmission.
        nat.push_str(&format!(
            "-A PREROUTING -i {GATEWAY_LINK} -m limit --limit {LOGGED_PER_SECOND}/sec --limit-burst {LOGGED_BURST} -j NFLOG --nflog-group {} --nflog-size {} --nflog-threshold 1\n",
            nflog::GROUP,
            self.logged_bytes
        ));

        let mut filter = String::new();
        // The box's answers on Hermes's own connections into it (its sshd): only
        // the reply direction of a connection the gateway side opened.
        filter.push_str(&format!(
            "-A INPUT -i lo -j ACCEPT\n\
             -A INPUT -i {GATEWAY_LINK} -m conntrack --ctstate DNAT -j ACCEPT\n\
             -A INPUT -i {GATEWAY_LINK} -p tcp -m conntrack --ctstate ESTABLISHED --ctdir REPLY -j ACCEPT\n"
        ));
        if self.tftp {
            filter.push_str(&format!(
                "-A INPUT -i {GATEWAY_LINK} -p udp --dport {TFTP_PORT} -j ACCEPT\n\
                 -A INPUT -i {GATEWAY_LINK} -p udp -m conntrack --ctstate ESTABLISHED -j ACCEPT\n"
            ));
        }
        for address in &self.pingable {
            filter.push_str(&format!(
                "-A INPUT -i {GATEWAY_LINK} -d {address} -p icmp --icmp-type echo-request -j ACCEPT\n"
            ));
        }
        if self.refused == RefusedAnswer::Reject {
            filter.push_str(&format!(
                "-A INPUT -i {GATEWAY_LINK} -p tcp -j REJECT --reject-with tcp-reset\n\
                 -A INPUT -i {GATEWAY_LINK} -p udp -j REJECT --reject-with icmp-port-unreachable\n\
                 -A INPUT -i {GATEWAY_LINK} -j REJECT --reject-with icmp-admin-prohibited\n"
            ));
        }
        format!(
            "*nat\n\
             :PREROUTING ACCEPT [0:0]\n\
             :INPUT ACCEPT [0:0]\n\
             :OUTPUT ACCEPT [0:0]\n\
             :POSTROUTING ACCEPT [0:0]\n\
             {nat}\
             COMMIT\n\
             *filter\n\
             :INPUT DROP [0:0]\n\
             :FORWARD DROP [0:0]\n\
             :OUTPUT ACCEPT [0:0]\n\
             {filter}\
             COMMIT\n"
        )
    }

    /// Loads the rules into the gateway namespace `gateway`, replacing what was
    /// there, and makes every address local for the box's traffic: the filter then
    /// answers for any destination, and TFTP transfers keep the server's address
    /// both ways.
    pub fn apply(&self, gateway: &str) -> Result<(), CommandError> {
        let namespace = netns::open(gateway).map_err(|source| CommandError::Namespace {
            path: gateway.to_owned(),
            source,
        })?;
        // -w: wait for the xtables lock (the legacy backend's) that an FTP data port's
        // iptables may hold a moment.
        command::run_at(
            Some(&namespace),
            "iptables-restore",
            &["-w", "5"],
            &self.script(),
        )?;
        let rule = ["rule", "add", "iif", GATEWAY_LINK, "lookup", LOCAL_TABLE];
        // A namespace reused after a restart has it already.
        let _ = command::run_at(
            Some(&namespace),
            "ip",
            &["rule", "del", "iif", GATEWAY_LINK, "lookup", LOCAL_TABLE],
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
            LOCAL_TABLE,
        ];
        command::run_at(Some(&namespace), "ip", &route, "")?;
        let link = [
            "route",
            "replace",
            "throw",
            self.link_network.as_str(),
            "table",
            LOCAL_TABLE,
        ];
        command::run_at(Some(&namespace), "ip", &link, "")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firewall(refused: RefusedAnswer, tftp: bool) -> Firewall {
        Firewall {
            refused,
            taken_ports: (1..=20).chain([80, 80]).collect(),
            tftp,
            pingable: vec![Ipv4Addr::new(10, 0, 2, 2)],
            logged_bytes: 200,
            link_network: "10.0.2.0/24".to_owned(),
        }
    }

    #[test]
    fn only_taken_ports_go_to_the_listener_and_nothing_is_forwarded() {
        let drop = firewall(RefusedAnswer::Drop, false).script();
        assert!(drop.contains(
            "-A PREROUTING -i gw0 -p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 -j REDIRECT --to-ports 7\n"
        ));
        assert!(drop.contains("--dports 16,17,18,19,20,80 -j REDIRECT"));
        assert!(!drop.contains("-p tcp -j REDIRECT"), "all TCP: {drop}");
        assert!(drop.contains(":FORWARD DROP"));
        assert!(!drop.contains("REJECT --reject"));
        // Hermes's listener is reached only through the redirect.
        assert!(drop.contains("--ctstate DNAT -j ACCEPT"));
        assert!(!drop.contains("--dport 7 -j ACCEPT"));
        let reject = firewall(RefusedAnswer::Reject, false).script();
        assert!(reject.contains("-p tcp -j REJECT --reject-with tcp-reset"));
        assert!(reject.contains("-p udp -j REJECT --reject-with icmp-port-unreachable"));
        assert!(!drop.contains("--dport 69"));
    }

    #[test]
    fn the_first_packet_of_each_flow_is_logged_after_what_hermes_takes() {
        let rules = firewall(RefusedAnswer::Drop, true).script();
        let log = rules
            .find("-j NFLOG --nflog-group 1 --nflog-size 200")
            .expect("log");
        let nat_end = rules.find("COMMIT").expect("commit");
        assert!(log < nat_end, "in the nat table: {rules}");
        for earlier in [
            "--to-ports 7",
            "--to-ports 53",
            "--dport 69 -j RETURN",
            "echo-request -j RETURN",
        ] {
            assert!(rules.find(earlier).expect(earlier) < log, "{earlier}");
        }
        assert!(rules.contains("-m limit --limit 100/sec --limit-burst 2000"));
    }

    #[test]
    fn tftp_requests_and_their_transfers_are_accepted_before_the_refusals() {
        let rules = firewall(RefusedAnswer::Reject, true).script();
        let request = rules.find("-p udp --dport 69 -j ACCEPT").expect("request");
        let acks = rules.find("--ctstate ESTABLISHED -j ACCEPT").expect("acks");
        let reject = rules.find("-j REJECT").expect("reject");
        assert!(request < reject && acks < reject);
        // Not redirected: the listener must see the server's address.
        assert!(!rules.contains("--dport 69 -j REDIRECT"));
    }

    #[test]
    fn a_data_port_is_redirected_first_and_removed_alike() {
        let port = "203.0.113.9:40123".parse().expect("address");
        let open = data_port_rule(true, port).join(" ");
        assert_eq!(
            open,
            "-w 5 -t nat -I PREROUTING 1 -i gw0 -p tcp -d 203.0.113.9 --dport 40123 -j REDIRECT --to-ports 7"
        );
        let close = data_port_rule(false, port).join(" ");
        assert_eq!(close, open.replace("-I PREROUTING 1", "-D PREROUTING"));
    }

    #[test]
    fn the_gateway_answers_a_ping_and_nothing_else_does() {
        let rules = firewall(RefusedAnswer::Reject, false).script();
        let ping = rules
            .find("-A INPUT -i gw0 -d 10.0.2.2 -p icmp --icmp-type echo-request -j ACCEPT")
            .expect("ping");
        assert!(ping < rules.find("-j REJECT").expect("reject"));
    }
}
