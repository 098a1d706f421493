//! The boxes' networks ([`BoxNetwork`]): per box a gateway namespace named with the
//! sensor, its link into the box, its firewall and its gateway; all removed when the
//! box stops, and at Hermes's start and shutdown whatever an earlier run left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hermes_core::boxnet::{BoxNetwork, BoxNetworkError, BoxOwners};
use hermes_core::config::{EgressConfig, EgressMode};
use hermes_core::events::EventBus;

use crate::BoxContext;
use crate::fetch::Fetcher;
use crate::ftp::FtpGateway;
use crate::gateway::{Dispatch, Gateway};
use crate::link;
use crate::netns::{self, Naming};
use crate::rules::Firewall;
use crate::seams::{DnsServer, FetchHandler, silent_dns};
use crate::sinkhole::Answer;

/// The boxes' networks of one sensor.
pub struct EgressNetwork {
    config: EgressConfig,
    naming: Naming,
    events: EventBus,
    owners: Arc<BoxOwners>,
    fetch: Option<Arc<dyn FetchHandler>>,
    tftp: Option<Arc<Fetcher>>,
    ftp: Option<Arc<FtpGateway>>,
    dns: DnsServer,
    gateways: Mutex<HashMap<String, Gateway>>,
}

impl EgressNetwork {
    /// For `sensor`, attributing traffic through `owners`. Nothing is fetched and DNS
    /// is not answered until [`Self::with_fetch`] and [`Self::with_dns`] plug them in.
    pub fn new(
        config: &EgressConfig,
        sensor: &str,
        events: EventBus,
        owners: Arc<BoxOwners>,
    ) -> Self {
        EgressNetwork {
            config: config.clone(),
            naming: Naming::new(sensor),
            events,
            owners,
            fetch: None,
            tftp: None,
            ftp: None,
            dns: silent_dns(),
            gateways: Mutex::new(HashMap::new()),
        }
    }

    /// Connections `fetch` wants are its own (`egress.mode: fetch` only).
    pub fn with_fetch(mut self, fetch: Arc<dyn FetchHandler>) -> Self {
        if self.config.mode == EgressMode::Fetch {
            self.fetch = Some(fetch);
        }
        self
    }

    /// The boxes' TFTP read requests are fetched by `fetcher` (`egress.mode: fetch` only).
    pub fn with_tftp(mut self, fetcher: Arc<Fetcher>) -> Self {
        if self.config.mode == EgressMode::Fetch {
            self.tftp = Some(fetcher);
        }
        self
    }

    /// The boxes' FTP is served by `ftp` (`egress.mode: fetch` only).
    pub fn with_ftp(mut self, ftp: FtpGateway) -> Self {
        if self.config.mode == EgressMode::Fetch {
            // Its data ports are opened in the firewall of the box that asked.
            self.ftp = Some(Arc::new(ftp.opening_ports_in(self.naming.clone())));
        }
        self
    }

    /// The boxes' DNS is served by `dns`.
    pub fn with_dns(mut self, dns: DnsServer) -> Self {
        self.dns = dns;
        self
    }

    /// The boxes' network as configured.
    pub(crate) fn network_config(&self) -> &hermes_core::config::EgressNetworkConfig {
        &self.config.network
    }

    /// The gateway namespace of a box.
    pub(crate) fn gateway_name(&self, container_id: &str) -> String {
        self.naming.name(container_id)
    }

    fn context(&self, container_id: &str) -> BoxContext {
        let owners = Arc::clone(&self.owners);
        let id = container_id.to_owned();
        BoxContext {
            container_id: container_id.to_owned(),
            owner: Arc::new(move || owners.owner(&id)),
            events: self.events.clone(),
        }
    }

    fn take_gateway(&self, container_id: &str) -> Option<Gateway> {
        self.gateways
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(container_id)
    }

    /// The box's firewall: Hermes takes the ports it fetches from (in `sinkhole`,
    /// the same ones, to log what the box asked for) and the listen ports.
    fn firewall(&self) -> Firewall {
        let taken_ports = self
            .config
            .upstream_ports
            .iter()
            .chain(&self.config.listen_ports)
            .copied()
            .collect();
        let network = &self.config.network;
        Firewall {
            refused: self.config.refused,
            taken_ports,
            tftp: self.tftp.is_some(),
            pingable: vec![network.gateway, network.resolver],
            link_network: network.link(),
            logged_bytes: logged_bytes(self.config.limits.first_bytes.bytes_usize()),
        }
    }

    /// Sets up the namespace, its link into the box and its firewall.
    async fn build(
        &self,
        name: &str,
        container_id: &str,
        init_pid: u32,
    ) -> Result<(), BoxNetworkError> {
        let name = name.to_owned();
        let container_id = container_id.to_owned();
        let network = self.config.network.clone();
        let firewall = self.firewall();
        tokio::task::spawn_blocking(move || {
            let reused = netns::exists(&name);
            if !reused {
                netns::add(&name)?;
            }
            link::connect(&name, reused, &container_id, init_pid, &network)?;
            firewall.apply(&name)
        })
        .await
        .map_err(|e| BoxNetworkError(format!("setup task: {e}")))?
        .map_err(|e| BoxNetworkError(e.to_string()))
    }
}

/// What the packet log copies of a packet: an IP header with options (60), a UDP
/// header (8), and the first bytes logged of its payload.
fn logged_bytes(first_bytes: usize) -> u32 {
    u32::try_from(first_bytes.saturating_add(68))
        .unwrap_or(u32::MAX)
        .min(u32::from(u16::MAX))
}

#[async_trait]
impl BoxNetwork for EgressNetwork {
    async fn attach(&self, container_id: &str, init_pid: u32) -> Result<(), BoxNetworkError> {
        if let Some(old) = self.take_gateway(container_id) {
            old.close().await;
        }
        let name = self.naming.name(container_id);
        let built = self.build(&name, container_id, init_pid).await;
        let opened = match built {
            Ok(()) => {
                let dispatch = Dispatch {
                    refused: Answer::configured(self.config.refused),
                    first_bytes: self.config.limits.first_bytes.bytes_usize(),
                    fetch: self.fetch.clone(),
                    tftp: self.tftp.clone(),
                    logged_bytes: logged_bytes(self.config.limits.first_bytes.bytes_usize()),
                    ftp: self.ftp.clone(),
                };
                Gateway::open(&name, self.context(container_id), dispatch, &self.dns)
                    .await
                    .map_err(|e| BoxNetworkError(format!("gateway listeners in {name}: {e}")))
            }
            Err(error) => Err(error),
        };
        match opened {
            Ok(gateway) => {
                self.gateways
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(container_id.to_owned(), gateway);
                tracing::debug!(target: "hermes::egress", netns = %name, "box network up");
                Ok(())
            }
            Err(error) => {
                remove_namespace(name).await;
                Err(error)
            }
        }
    }

    async fn detach(&self, container_id: &str) {
        if let Some(gateway) = self.take_gateway(container_id) {
            gateway.close().await;
        }
        self.owners.forget(container_id);
        remove_namespace(self.naming.name(container_id)).await;
    }

    async fn reconcile(&self, running: &[String]) {
        for name in netns::list() {
            let Some(short) = self.naming.container_of(&name) else {
                continue;
            };
            if running.iter().any(|id| id.starts_with(short)) {
                tracing::info!(target: "hermes::egress", netns = %name, "kept the gateway namespace of a container still running");
                continue;
            }
            tracing::info!(target: "hermes::egress", netns = %name, "removing a gateway namespace an earlier run left");
            remove_namespace(name).await;
        }
    }

    async fn shutdown(&self) {
        let gateways: Vec<Gateway> = self
            .gateways
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, gateway)| gateway)
            .collect();
        for gateway in gateways {
            gateway.close().await;
        }
        for name in netns::list() {
            if self.naming.container_of(&name).is_some() {
                remove_namespace(name).await;
            }
        }
    }
}

async fn remove_namespace(name: String) {
    let shown = name.clone();
    let removed = tokio::task::spawn_blocking(move || netns::delete(&name)).await;
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(target: "hermes::egress", netns = %shown, %error, "cannot remove a gateway namespace")
        }
        Err(error) => {
            tracing::warn!(target: "hermes::egress", netns = %shown, %error, "removing a gateway namespace failed")
        }
    }
}
