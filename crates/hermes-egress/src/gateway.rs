//! One box's gateway: Hermes's listeners inside the box's gateway namespace (bound
//! there by a thread that entered it, then run by tokio like any socket), and the
//! dispatcher that hands each TCP connection to the fetcher or to the sinkhole (an
//! FTP data connection first to the transfer waiting for it).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::BoxContext;
use crate::fetch::Fetcher;
use crate::ftp::FtpGateway;
use crate::netns;
use crate::nflog::{PacketLog, RecentFlows};
use crate::original_dst::original_destination;
use crate::rules::{DNS_PORT, TCP_PORT, TFTP_PORT};
use crate::seams::{BoxConnection, DnsServer, FetchHandler};
use crate::sinkhole::{self, Answer};
use crate::tftp::{Bind, TftpAnswer, answer_box, pktinfo};

/// Connections one box may have open at the gateway; past it, new ones are reset at
/// once (a box's connection flood costs it, not the sensor).
pub const MAX_OPEN_PER_BOX: usize = 256;

/// How the gateway answers.
#[derive(Clone)]
pub struct Dispatch {
    /// The answer to connections nobody fetches.
    pub refused: Answer,
    /// Bytes of a refused connection that are logged.
    pub first_bytes: usize,
    /// Takes the connections it wants (None: nothing is fetched).
    pub fetch: Option<Arc<dyn FetchHandler>>,
    /// Fetches the box's TFTP read requests (None: UDP 69 is not listened to).
    pub tftp: Option<Arc<Fetcher>>,
    /// Bytes the firewall's packet log copies of each packet.
    pub logged_bytes: u32,
    /// Serves the box's FTP, and takes the data connections its transfers wait for.
    pub ftp: Option<Arc<FtpGateway>>,
}

impl Dispatch {
    /// Hands the connection to whoever answers it.
    pub async fn dispatch(&self, connection: BoxConnection) {
        let connection = match &self.ftp {
            Some(ftp) => match ftp.claim(connection) {
                Some(connection) if ftp.wants(connection.destination) => {
                    return ftp.serve(connection).await;
                }
                Some(connection) => connection,
                None => return,
            },
            None => connection,
        };
        if let Some(fetch) = &self.fetch
            && fetch.wants(connection.destination)
        {
            return fetch.handle(connection).await;
        }
        sinkhole::refuse(connection, self.refused, self.first_bytes).await;
    }
}

/// A running gateway; its tasks (and every connection they hold) end when it is
/// closed or dropped.
pub struct Gateway {
    tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Binds the listeners in the namespace `name` and starts serving the box.
    pub async fn open(
        name: &str,
        context: BoxContext,
        dispatch: Dispatch,
        dns: &DnsServer,
    ) -> std::io::Result<Gateway> {
        let with_tftp = dispatch.tftp.is_some();
        let log = PacketLog::open(name, dispatch.logged_bytes).await?;
        let (tcp, udp, tftp) = netns::run_in(name, move || {
            let any = Ipv4Addr::UNSPECIFIED;
            let tcp = std::net::TcpListener::bind((any, TCP_PORT))?;
            deepen_backlog(&tcp)?;
            tcp.set_nonblocking(true)?;
            let udp = std::net::UdpSocket::bind((any, DNS_PORT))?;
            udp.set_nonblocking(true)?;
            let tftp = if with_tftp {
                let tftp = std::net::UdpSocket::bind((any, TFTP_PORT))?;
                pktinfo::enable_pktinfo(&tftp)?;
                tftp.set_nonblocking(true)?;
                Some(tftp)
            } else {
                None
            };
            Ok((tcp, udp, tftp))
        })
        .await?;
        let tcp = TcpListener::from_std(tcp)?;
        let udp = UdpSocket::from_std(udp)?;
        let mut tasks = vec![tokio::spawn(dns(udp, context.clone()))];
        if let (Some(listener), Some(fetcher)) = (tftp, dispatch.tftp.clone()) {
            let namespace = name.to_owned();
            let bind: Bind = Arc::new(move |address| {
                let namespace = namespace.clone();
                Box::pin(async move {
                    netns::run_in(&namespace, move || pktinfo::bind_as(address)).await
                })
            });
            let answer = TftpAnswer {
                fetcher,
                bind,
                upstream_port: TFTP_PORT,
            };
            let listener = UdpSocket::from_std(listener)?;
            tasks.push(tokio::spawn(answer_box(listener, context.clone(), answer)));
        }
        tasks.push(tokio::spawn(report_answered(
            log,
            context.clone(),
            dispatch.clone(),
        )));
        tasks.push(tokio::spawn(accept_loop(tcp, context, dispatch)));
        Ok(Gateway { tasks })
    }

    /// Stops it and waits until its sockets are closed.
    pub async fn close(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reports what the firewall answered itself, from its packet log.
async fn report_answered(mut log: PacketLog, context: BoxContext, dispatch: Dispatch) {
    let mut recent = RecentFlows::default();
    // A log that keeps failing is retried ever more slowly (and warned about so).
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        match log.next().await {
            Ok(packets) => {
                pause = std::time::Duration::from_millis(200);
                let now = std::time::Instant::now();
                for packet in packets
                    .iter()
                    .filter(|packet| recent.first_of_attempt(packet, now))
                {
                    sinkhole::log_answered(
                        &context,
                        packet,
                        dispatch.refused,
                        dispatch.first_bytes,
                    );
                }
            }
            Err(error) => {
                tracing::warn!(target: "hermes::egress", container_id = %short(&context.container_id), %error, "the firewall's packet log failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, context: BoxContext, dispatch: Dispatch) {
    let open = Arc::new(Semaphore::new(MAX_OPEN_PER_BOX));
    // Owned here: when the gateway goes, every connection it holds goes with it.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(target: "hermes::egress", container_id = %short(&context.container_id), %error, "gateway accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(connection) = box_connection(stream, &context) else {
            continue;
        };
        let dispatch = dispatch.clone();
        match Arc::clone(&open).try_acquire_owned() {
            Ok(permit) => {
                connections.spawn(async move {
                    dispatch.dispatch(connection).await;
                    drop(permit);
                });
            }
            Err(_) => {
                connections.spawn(sinkhole::refuse(
                    connection,
                    Answer::BoxConnectionLimit,
                    dispatch.first_bytes,
                ));
            }
        }
    }
}

fn box_connection(stream: TcpStream, context: &BoxContext) -> Option<BoxConnection> {
    let destination: SocketAddr = match original_destination(&stream) {
        Ok(destination) => destination,
        Err(error) => {
            tracing::warn!(target: "hermes::egress", container_id = %short(&context.container_id), %error, "a box connection without its original destination");
            return None;
        }
    };
    Some(BoxConnection {
        stream,
        destination,
        context: context.clone(),
    })
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Connections a box may have waiting to be accepted: std listens with 128, and a
/// box's burst past that (a scan, a flood) would see its handshakes stall while the
/// gateway is busy. Past [`MAX_OPEN_PER_BOX`] held ones the gateway resets them anyway.
const ACCEPT_BACKLOG: libc::c_int = 1024;

fn deepen_backlog(listener: &std::net::TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket this function borrows; a second listen only
    // changes the backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), ACCEPT_BACKLOG) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
