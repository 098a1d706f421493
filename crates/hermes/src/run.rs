//! `hermes run`: wiring the components together, serving, and shutting down cleanly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hermes_core::boxnet::BoxNetwork;
use hermes_core::capture::{CaptureLimits, FileStore};
use hermes_core::config::{self, Config, LogDestination, LogLevel, ServerConfig};
use hermes_core::config::{BoxSshdIo, EgressMode, EventRotation, SessionServer};
use hermes_core::events::{EventBus, EventSink, JsonLinesFile, Rotation, spawn_writer};
use hermes_core::metrics::{EventMetrics, MetricsSink};
use hermes_core::persona::DEFAULT_SSH_BANNER;
use hermes_core::session::{CaptureServices, SessionServices};
use hermes_egress::dns::{Resolver, ResolverSettings};
use hermes_egress::fetch::Fetcher;
use hermes_egress::ftp::FtpGateway;
use hermes_egress::parts::{self, HttpFetch};
use hermes_egress::ssrf::UpstreamPolicy;
use hermes_egress::tls::TlsGateway;
use hermes_egress::{EgressNetwork, SshForwards};
use hermes_sandbox::{ContainerProfile, DockerSandbox, Endpoint, PoolSettings, TlsFiles};
use hermes_ssh::hostkeys;
use hermes_ssh::{AlgorithmNames, BoxSshClient, ProxySettings, SshServer, SshSettings};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::logging::{self, LogSettings};
use crate::metrics_http::{self, MetricsSource};

/// How long open sessions get to end after SIGTERM before they are cut.
const DRAIN: Duration = Duration::from_secs(10);
/// A balancer sends its PROXY header at once; a connection without one in this time
/// is closed.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    config: Config,
    config_path: PathBuf,
    level_override: Option<LogLevel>,
    priority: crate::priority::Priority,
) -> anyhow::Result<()> {
    logging::init(
        &LogSettings {
            level: level_override.unwrap_or(config.logging.level),
            format: config.logging.format,
            include: config.logging.include_fields.clone(),
            stdout: config
                .logging
                .destinations
                .contains(&LogDestination::Stdout),
        },
        config
            .logging
            .destinations
            .contains(&LogDestination::File)
            .then_some(config.logging.output_dir.as_path()),
    )
    .with_context(|| {
        format!(
            "cannot open the log directory {}",
            config.logging.output_dir.display()
        )
    })?;
    let config = Arc::new(config);
    let sensor = config.sensor_name();
    raise_open_file_limit();
    tracing::info!(target: "hermes", version = env!("CARGO_PKG_VERSION"), sensor, "starting");
    priority.log();

    let event_path = config.logging.output_dir.join(&config.logging.event_file);
    let (events, receiver) = EventBus::new(&sensor);
    let rotation = match config.logging.event_rotation {
        EventRotation::Daily => Rotation::Daily,
        EventRotation::Never => Rotation::Never,
        EventRotation::Size => Rotation::Size(config.logging.event_rotation_size.bytes()),
    };
    let backlog = config.logging.event_backlog_size.bytes_usize();
    let sink = JsonLinesFile::open_rotating(&event_path, rotation)
        .with_context(|| format!("cannot open the event log {}", event_path.display()))?
        .with_backlog(backlog);
    let file_dropped = sink.dropped_counter();
    let event_metrics = Arc::new(EventMetrics::default());
    let mut sinks: Vec<Box<dyn EventSink>> = vec![Box::new(sink)];
    if config.metrics.enabled {
        sinks.push(Box::new(MetricsSink::new(Arc::clone(&event_metrics))));
    }
    let writer = spawn_writer(receiver, sinks).context("cannot start the event writer")?;

    let (host_keys, generated) =
        hostkeys::load_or_generate(&config.server.host_key_path).context("host keys")?;
    for path in generated {
        tracing::info!(target: "hermes", path = %path.display(), "generated host key");
    }

    let tls = config.docker.tls.as_ref().map(|tls| TlsFiles {
        ca: tls.ca.clone(),
        cert: tls.cert.clone(),
        key: tls.key.clone(),
    });
    let endpoint = Endpoint::from_config(
        &config.docker.socket_path,
        config.docker.base_url.as_deref(),
        tls.as_ref(),
    )?;
    let profile = ContainerProfile::from_config(&config, &sensor);
    let stream_endpoint = match config.docker.stream_url.as_deref() {
        Some(url) => Some(Endpoint::from_config(
            &config.docker.socket_path,
            Some(url),
            tls.as_ref(),
        )?),
        None => None,
    };
    let box_sshd = config.box_sshd_unavailable().is_none();
    let sandbox = DockerSandbox::connect(
        endpoint,
        stream_endpoint,
        profile,
        PoolSettings {
            // The box's own sshd starts each session: no standby waits in a box.
            standby: (!box_sshd).then(hermes_core::session::standby_spec),
            ..PoolSettings::from_config(&config)
        },
        events.clone(),
    )
    .await
    .context("Docker is required (scripts/ensure-docker.sh installs and starts it)")?;
    if let Err(reason) = sandbox.check_lxcfs().await {
        bail!("{reason} (scripts/ensure-lxcfs.sh installs and starts lxcfs)");
    }
    let image_banner = sandbox.image_banner().await.context("target image")?;
    let banner = match config.persona.ssh_banner.as_str() {
        "auto" => image_banner.unwrap_or_else(|| DEFAULT_SSH_BANNER.to_owned()),
        configured => configured.to_owned(),
    };
    if !banner.starts_with("SSH-2.0-") || !banner.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        bail!("the image's banner label {banner:?} is not an SSH-2.0 identification string");
    }

    if config.persona.past {
        let seed = hermes_core::past::sensor_seed(&sensor, &config.persona.hostname);
        let installed = match sandbox.image_installed().await.context("target image")? {
            Some(installed) => installed,
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|since| since.as_secs())
                    .unwrap_or(0);
                let assumed = hermes_core::past::assumed_install(seed, now);
                tracing::info!(target: "hermes::sandbox", installed = assumed, "the target image has no {} label (built before it was added): its server's install date is assumed", hermes_sandbox::INSTALLED_LABEL);
                assumed
            }
        };
        sandbox.set_past(seed, installed);
    }

    let address = (config.server.host, config.server.port);
    let listener = listen(address.into()).with_context(|| {
        format!(
            "cannot listen on {}:{}",
            config.server.host, config.server.port
        )
    })?;

    // Port 0 asks the kernel for a free port: the addresses logged below are the bound ones.
    let ssh_address = listener
        .local_addr()
        .context("the SSH listener's bound address")?;

    let metrics_listener = if config.metrics.enabled {
        // The configuration check keeps it off the SSH address (port 0 aside).
        let listen = config.metrics.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("metrics.listen: cannot listen on {listen}"))?;
        let bound = listener
            .local_addr()
            .context("the metrics listener's bound address")?;
        Some((listener, bound))
    } else {
        None
    };

    let capture = capture_services(&config)?;

    if config.recording.enabled {
        // Sessions a killed predecessor left open are closed before new ones start.
        let closed =
            hermes_core::recovery::close_left_open(&config.recording.output_dir, &events).await;
        if closed > 0 {
            tracing::warn!(target: "hermes", sessions = closed, "closed sessions the previous process left open (end_reason sensor_died)");
        }
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let services = SessionServices::new(
        Arc::clone(&config),
        events.clone(),
        sandbox.clone(),
        shutdown_rx.clone(),
        capture,
    );
    let network = box_network(&config, &sensor, &events, &services, &sandbox)?;
    if let Some(network) = &network {
        sandbox.set_network(Arc::clone(network));
    }
    sandbox.start().await;
    tracing::info!(
        target: "hermes",
        credentials = services.policy().credential_count(),
        mode = ?services.policy().mode(),
        "credential policy loaded"
    );
    let state_saver = {
        let services = Arc::clone(&services);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(STATE_SAVE_INTERVAL).await;
                save_state(&services);
            }
        })
    };
    let persona = &config.persona;
    let server = SshServer::new(
        SshSettings {
            banner: banner.clone(),
            host_keys,
            algorithms: AlgorithmNames {
                kex: persona.kex_algorithms.clone(),
                host_key: persona.host_key_algorithms.clone(),
                ciphers: persona.ciphers.clone(),
                macs: persona.macs.clone(),
                compression: persona.compression.clone(),
            },
            keyboard_interactive: config.persona.keyboard_interactive,
            max_auth_tries: config.persona.max_auth_tries,
            login_grace: config.persona.login_grace_time.non_zero(),
            client_alive: config
                .persona
                .client_alive_interval
                .non_zero()
                .map(|interval| (interval, config.persona.client_alive_count_max)),
            proxy: proxy_settings(&config.server),
        },
        Arc::clone(&services),
    );
    tokio::spawn(report_pool_ready(
        sandbox.clone(),
        config.container_pool.spawn_timeout.get(),
    ));
    if let Some((listener, bound)) = metrics_listener {
        tracing::info!(target: "hermes::metrics", address = %bound, "serving /metrics and /healthz");
        let source = Arc::new(MetricsSource {
            events: Arc::clone(&event_metrics),
            bus: events.clone(),
            file_dropped,
            sandbox: sandbox.clone(),
        });
        tokio::spawn(metrics_http::serve(listener, source, shutdown_rx.clone()));
    }
    tokio::spawn(wait_for_signal(shutdown_tx));
    let reloader = tokio::spawn(reload_on_hangup(config_path, Arc::clone(&services)));
    tokio::spawn(return_freed_memory());
    tracing::info!(target: "hermes", address = %ssh_address, banner, "listening");

    server.serve(listener, shutdown_rx, DRAIN).await;
    let left = services.wait_finalized(FINALIZE).await;
    if left > 0 {
        tracing::warn!(target: "hermes", left, "sessions still capturing files at shutdown; stopping anyway");
    }

    tracing::info!(target: "hermes", "stopping containers");
    sandbox.shutdown().await;
    if let Some(network) = &network {
        network.shutdown().await;
    }
    state_saver.abort();
    reloader.abort();
    save_state(&services);
    if services.metadata.retry() {
        let left = services.metadata.pending();
        tracing::error!(target: "hermes", left, "session metadata files still cannot be written at shutdown; they are lost");
    }
    events.flush().await;
    drop(server);
    drop(events);
    tracing::info!(target: "hermes", "stopped");
    // The writer thread ends once the last bus clone is gone; do not wait on clones a
    // detached task may still hold.
    drop(writer);
    Ok(())
}

/// The boxes' networks when `egress` is on (checked: the host gives what they need),
/// and the policy of the SSH client's forwards.
fn box_network(
    config: &Config,
    sensor: &str,
    events: &EventBus,
    services: &SessionServices,
    sandbox: &Arc<DockerSandbox>,
) -> anyhow::Result<Option<Arc<dyn BoxNetwork>>> {
    match config.box_sshd_unavailable() {
        None => {}
        Some(why) if config.container_pool.session_server == SessionServer::BoxSshd => {
            tracing::info!(target: "hermes::session", "{why}: sessions run through the engine");
        }
        Some(_) => {}
    }
    if config.egress.mode == EgressMode::Off {
        return Ok(None);
    }
    hermes_egress::host::check()
        .map_err(anyhow::Error::msg)
        .context("egress.mode is not off")?;
    tracing::info!(target: "hermes::egress", mode = ?config.egress.mode, refused = ?config.egress.refused, "boxes get a network through their own gateway namespace");
    let resolver = Arc::new(Resolver::new(ResolverSettings::from_config(
        &config.egress.dns,
    )));
    let mut network = EgressNetwork::new(
        &config.egress,
        sensor,
        events.clone(),
        Arc::clone(&services.box_owners),
    )
    .with_dns(parts::dns_server(Arc::clone(&resolver)));
    // The SSH client's forwards (ssh -L, -D) get the boxes' policy.
    let mut forwards = SshForwards::new(&config.egress, resolver, events.clone());
    if config.egress.mode == EgressMode::Fetch {
        // Validation makes `fetch` need `capture`: downloads go to its store.
        let store = services
            .capture
            .as_ref()
            .map(|capture| Arc::clone(&capture.store))
            .context("egress.mode fetch needs capture.enabled")?;
        let fetcher = Fetcher::new(
            &config.egress,
            UpstreamPolicy::from_config(&config.egress),
            store,
        );
        let fetcher = Arc::new(fetcher);
        // A box's TFTP read requests are fetched like its HTTP downloads.
        network = network.with_tftp(Arc::clone(&fetcher));
        // And its FTP (port 21, passive data connections through its gateway).
        network = network.with_ftp(FtpGateway::new(&config.egress, Arc::clone(&fetcher)));
        let (tls, generated) =
            TlsGateway::from_config(&config.egress.tls, &config.server.host_key_path)?;
        let tls = Arc::new(tls);
        forwards =
            forwards.with_fetch(&config.egress, Arc::clone(&fetcher), Some(Arc::clone(&tls)));
        if let Some(path) = generated {
            tracing::info!(target: "hermes::egress", path = %path.display(), "generated the sensor's CA for the boxes' HTTPS");
        }
        // Every box trusts the sensor's CA, filed under its configured name.
        sandbox.set_trusted_ca(
            &config.egress.tls.ca_common_name,
            tls.ca().certificate_pem().to_owned(),
            tls.ca().subject_hash(),
        );
        let fetch = HttpFetch::new(&config.egress, fetcher).with_tls(&config.egress, tls);
        network = network.with_fetch(Arc::new(fetch));
    }
    services.set_forward_gateway(Arc::new(forwards));
    let network = Arc::new(network);
    if config.box_sshd_unavailable().is_none() {
        tracing::info!(target: "hermes::session", "sessions run through the box's own sshd");
        // Where this host lets Hermes take the descriptors of a box's processes, the
        // programs' input and output skip the box's sshd (see ChannelTakeover).
        let takeover = (config.container_pool.box_sshd_io == BoxSshdIo::Taken)
            .then(|| Arc::clone(sandbox) as Arc<dyn hermes_core::box_sshd::ChannelTakeover>);
        services.set_box_sshd(Arc::new(BoxSshClient::new(network.clone(), takeover)));
    }
    Ok(Some(network))
}

/// Connections the kernel completes and queues for the SSH listener before Hermes
/// accepts them (capped by net.core.somaxconn). A burst of flood connections past
/// the queue makes the kernel drop SYNs, everyone's alike, and a client's retry comes
/// a second later: a deep queue lets admission control, not the kernel, choose.
const ACCEPT_BACKLOG: u32 = 4096;

/// The SSH listener, with [`ACCEPT_BACKLOG`].
fn listen(address: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// How long ended sessions get to finish their final capture at shutdown.
const FINALIZE: Duration = Duration::from_secs(60);

/// The file store and limits of `capture`, or None when capture is off.
fn capture_services(config: &Config) -> anyhow::Result<Option<CaptureServices>> {
    let capture = &config.capture;
    if !capture.enabled {
        return Ok(None);
    }
    let store = FileStore::open(&capture.output_dir, capture.max_store_size.bytes())
        .context("capture.output_dir")?;
    tracing::info!(target: "hermes::capture", dir = %capture.output_dir.display(), used = store.used(), "file store opened");
    Ok(Some(CaptureServices {
        store: Arc::new(store),
        limits: CaptureLimits {
            max_file_size: capture.max_file_size.bytes(),
            max_files_per_session: capture.max_files_per_session as usize,
            ignore_paths: capture.ignore_paths.clone(),
        },
    }))
}

/// Every connection is a file descriptor: take the hard limit, not the soft default.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if ok && limit.rlim_cur < limit.rlim_max {
        let wanted = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            limit = wanted;
        }
    }
    tracing::info!(target: "hermes", open_files = limit.rlim_cur, "file descriptor limit");
}

/// How often the state files (sticky credentials, returning sources' machines) are
/// written when they changed.
const STATE_SAVE_INTERVAL: Duration = Duration::from_secs(2);

fn save_state(services: &SessionServices) {
    if let Some(memory) = services.policy().sticky_memory()
        && let Err(error) = memory.save_if_dirty()
    {
        tracing::error!(target: "hermes::auth", %error, "cannot save the sticky credential state");
    }
    if let Err(error) = services.machines.save_if_dirty() {
        tracing::error!(target: "hermes::sandbox", %error, "cannot save the returning-source machine map");
    }
}

async fn report_pool_ready(sandbox: Arc<DockerSandbox>, spawn_timeout: Duration) {
    let started = std::time::Instant::now();
    if sandbox
        .wait_ready(spawn_timeout.max(Duration::from_secs(60)))
        .await
    {
        tracing::info!(target: "hermes::sandbox", ready = sandbox.status().ready, elapsed_ms = started.elapsed().as_millis() as u64, "container pool ready");
    } else {
        tracing::warn!(target: "hermes::sandbox", status = ?sandbox.status(), "container pool not full yet");
    }
}

/// Reloads the configuration file on SIGHUP. The credential policy and the connection
/// and session limits change for new connections and logins; open sessions go on.
/// Other changed keys are named as needing a restart; a file that does not validate
/// changes nothing.
async fn reload_on_hangup(path: PathBuf, services: Arc<SessionServices>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::error!(target: "hermes", "cannot install the SIGHUP handler; configuration reload is off");
        return;
    };
    while hangup.recv().await.is_some() {
        let file = path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load_file(&file)).await;
        match loaded {
            Ok(Ok(new)) => {
                save_state(&services);
                let report = services.reload(&new);
                tracing::info!(target: "hermes", path = %path.display(), applied = %report.applied.join(", "), credentials = services.policy().credential_count(), mode = ?services.policy().mode(), "configuration reloaded");
                if !report.needs_restart.is_empty() {
                    tracing::warn!(target: "hermes", keys = %report.needs_restart.join(", "), "changed keys that take effect only after a restart");
                }
            }
            Ok(Err(error)) => {
                tracing::error!(target: "hermes", %error, "configuration reload refused; nothing changed");
            }
            Err(error) => {
                tracing::error!(target: "hermes", %error, "configuration reload failed; nothing changed");
            }
        }
    }
}

async fn wait_for_signal(shutdown: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!(target: "hermes", "cannot install signal handlers");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(target: "hermes", signal = name, "shutting down");
    shutdown.send_replace(true);
}

/// How often memory freed by the allocator goes back to the system.
const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// glibc keeps freed memory mapped: after a flood of connections (41 KiB each past the
/// version line) the process would hold its peak for good. Trimming now and then
/// gives it back, so the resident size follows the load.
async fn return_freed_memory() {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory; it is thread-safe.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// The PROXY protocol settings, when it is on.
fn proxy_settings(server: &ServerConfig) -> Option<ProxySettings> {
    server.proxy_protocol.then(|| ProxySettings {
        trusted: server.proxy_trusted.clone(),
        header_timeout: PROXY_HEADER_TIMEOUT,
    })
}
