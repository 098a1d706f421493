//! Starting processes in a leased container: through the engine's exec (with its
//! terminal), by taking over the container's standby login, or, for file transfers,
//! with their data on the container's own pipes opened from the host.

use super::*;

/// How long a new standby login gets to quiet its terminal.
const STANDBY_READY_WAIT: Duration = Duration::from_secs(10);

/// Longest a `/dev/shm` archive may take to arrive.
const SHM_READ_TIMEOUT: Duration = Duration::from_secs(20);

impl DockerSandbox {
    /// Starts the standby process in a new ready container; without one, logins there
    /// start their process the ordinary way.
    pub(super) async fn start_standby(&self, container_id: &str) {
        let Some(standby) = &self.settings.standby else {
            return;
        };
        match self.exec(container_id, &standby.process).await {
            Ok((exec_id, stream)) => {
                let mut waiting = Standby::new(exec_id, stream);
                if waiting.wait_ready(&standby.ready, STANDBY_READY_WAIT).await {
                    self.standbys().insert(container_id.to_owned(), waiting);
                } else {
                    tracing::warn!(target: "hermes::sandbox", container_id = %short(container_id), "the standby login did not get ready; logins there start their own process");
                    waiting.cancel(&standby.cancel).await;
                }
            }
            Err(error) => {
                tracing::warn!(target: "hermes::sandbox", container_id = %short(container_id), %error, "cannot start the standby login");
            }
        }
    }

    /// Creates and starts an exec, returning its id and attached stream once the
    /// process runs.
    pub(super) async fn exec(
        &self,
        container_id: &str,
        spec: &ProcessSpec,
    ) -> Result<(String, hijack::ExecStream), SandboxError> {
        self.exec_as(container_id, spec, spec.argv.clone(), true)
            .await
    }

    /// Creates and starts an exec running `argv` with `spec`'s user, environment and
    /// terminal; with `attach_io` false only its stderr comes through the engine.
    pub(super) async fn exec_as(
        &self,
        container_id: &str,
        spec: &ProcessSpec,
        argv: Vec<String>,
        attach_io: bool,
    ) -> Result<(String, hijack::ExecStream), SandboxError> {
        let tty = spec.tty;
        let config = ExecConfig {
            attach_stdin: Some(attach_io),
            attach_stdout: Some(attach_io),
            attach_stderr: Some(true),
            tty: Some(tty.is_some()),
            console_size: tty.map(|s| vec![s.height as usize, s.width as usize]),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            cmd: Some(argv),
            user: Some(spec.user.clone()),
            working_dir: Some(spec.workdir.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(container_id, config)
            .await
            .map_err(|error| match &error {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                } => SandboxError::ContainerGone(short(container_id).to_owned()),
                _ => engine(error),
            })?;
        let stream = hijack::start_exec(
            &self.stream_endpoint,
            &self.api_version,
            &created.id,
            tty.is_some(),
        )
        .await?;
        let stream = self.confirm_started(&created.id, stream).await?;
        Ok((created.id, stream))
    }

    /// `/dev/shm` as a tar stream, made by the container's `tar` (the engine's archive
    /// endpoint does not reach into the container's tmpfs mounts).
    pub(super) async fn shm_archive(
        &self,
        lease: &Lease,
        max_files: usize,
        max_size: u64,
    ) -> Result<Vec<u8>, SandboxError> {
        let spec = ProcessSpec {
            argv: [
                "tar",
                "-C",
                "/dev/shm",
                "--one-file-system",
                "-cf",
                "-",
                ".",
            ]
            .map(str::to_owned)
            .to_vec(),
            env: Vec::new(),
            user: "root".to_owned(),
            workdir: "/".to_owned(),
            tty: None,
            standby_input: None,
            file_transfer: false,
        };
        let mut process = self.spawn(lease, spec).await?;
        drop(process.input);
        let cap = (max_files as u64)
            .saturating_mul(max_size.saturating_add(1024))
            .min(1 << 30);
        let mut archive = Vec::new();
        let read = async {
            while let Some(chunk) = process.output.next_chunk().await? {
                if let OutputChunk::Stdout(bytes) = chunk {
                    archive.extend_from_slice(&bytes);
                    if archive.len() as u64 > cap {
                        break;
                    }
                }
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(SHM_READ_TIMEOUT, read).await {
            Ok(Ok(())) => Ok(archive),
            Ok(Err(error)) => Err(SandboxError::Engine(error.to_string())),
            Err(_) => Err(SandboxError::Timeout(SHM_READ_TIMEOUT.as_secs())),
        }
    }

    /// Starts a file-transfer process with its stdin and stdout on FIFOs opened from
    /// the host ([`direct`]). Ok(None) when that cannot be done here, before anything
    /// ran in the container (the caller then starts it the ordinary way).
    pub(super) async fn spawn_direct(
        &self,
        lease: &Lease,
        spec: &ProcessSpec,
    ) -> Result<Option<Process>, SandboxError> {
        let container_id = &lease.container_id;
        let inspect = match self.docker.inspect_container(container_id, None).await {
            Ok(inspect) => inspect,
            Err(error) if is_not_found(&error) => {
                return Err(SandboxError::ContainerGone(short(container_id).to_owned()));
            }
            Err(error) => return Err(engine(error)),
        };
        let state = inspect.state.unwrap_or_default();
        if state.running != Some(true) {
            return Err(SandboxError::ContainerGone(short(container_id).to_owned()));
        }
        let pid = state.pid.unwrap_or(0);
        let fifos = match direct::Fifos::make(pid, container_id) {
            Ok(fifos) => fifos,
            Err(error) => {
                self.engine_only(container_id);
                tracing::info!(target: "hermes::sandbox", container_id = %short(container_id), %error, "this container's file transfers go through the engine's stream (its processes are not reachable from here)");
                return Ok(None);
            }
        };
        let stdout = match fifos.open_stdout() {
            Ok(stdout) => stdout,
            Err(error) => {
                tracing::warn!(target: "hermes::sandbox", container_id = %short(container_id), %error, "cannot open a transfer's output pipe; using the engine's stream");
                return Ok(None);
            }
        };
        let (exec_id, stream) = match self
            .exec_as(container_id, spec, fifos.wrap(&spec.argv), false)
            .await
        {
            Ok(started) => started,
            Err(error) => {
                fifos.release_waiting();
                return Err(error);
            }
        };
        let docker = self.docker.clone();
        let exec = exec_id.clone();
        let stdin = fifos
            .open_stdin(|| {
                let docker = docker.clone();
                let exec = exec.clone();
                async move {
                    docker
                        .inspect_exec(&exec)
                        .await
                        .map(|i| i.running == Some(false))
                        .unwrap_or(false)
                }
            })
            .await;
        let stdin = match stdin {
            Ok(stdin) => stdin,
            Err(error) => {
                // Nothing of the program ran: its shell stops at the redirection.
                fifos.release_waiting();
                self.engine_only(container_id);
                tracing::warn!(target: "hermes::sandbox", container_id = %short(container_id), %error, "a transfer's process did not open its pipes; this container's file transfers go through the engine's stream from now on");
                return Ok(None);
            }
        };
        drop(fifos);
        let (reader, _unused_writer) = tokio::io::split(stream);
        Ok(Some(Process {
            output: Box::new(DirectOutput::new(stdout, reader)),
            input: Box::new(direct::Input::new(stdin)),
            control: Box::new(ExecControl {
                docker: self.docker.clone(),
                exec_id,
                container_id: container_id.clone(),
                resizes: Arc::clone(&self.resizes),
            }),
            path: IoPath::Direct,
        }))
    }

    /// Waits until the engine has started the exec's process. When it could not (the
    /// program is missing, say), the engine writes its own error text into the stream;
    /// that text must never reach the attacker, so it becomes an error here.
    pub(super) async fn confirm_started(
        &self,
        exec_id: &str,
        mut stream: hijack::ExecStream,
    ) -> Result<hijack::ExecStream, SandboxError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let inspect = self.docker.inspect_exec(exec_id).await.map_err(engine)?;
            if inspect.pid.is_some_and(|pid| pid > 0) {
                return Ok(stream);
            }
            if inspect.running == Some(false) && inspect.exit_code.is_some() {
                let mut text = vec![0u8; 4096];
                let read = tokio::time::timeout(
                    Duration::from_millis(500),
                    tokio::io::AsyncReadExt::read(&mut stream, &mut text),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
                let text = String::from_utf8_lossy(&text[..read]);
                return Err(SandboxError::Engine(format!(
                    "exec did not start: {}",
                    hermes_core::escape::escape_untrusted(text.trim())
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                // Still starting after this long: let the output decide.
                return Ok(stream);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Daemons before API 1.42 ignore the exec's console size: set it right after the
    /// start, retrying briefly while the exec is still coming up.
    pub(super) async fn initial_resize(&self, exec_id: &str, size: TtySize) {
        for attempt in 0..5 {
            match resize_exec(&self.docker, exec_id, size).await {
                Ok(()) => return,
                Err(error) if attempt == 4 => {
                    tracing::warn!(target: "hermes::sandbox", %error, "cannot set the terminal size");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Whether this container's file transfers may use [`direct`] pipes.
    pub(super) fn direct_io_for(&self, container_id: &str) -> bool {
        self.direct_io
            && !self
                .engine_only
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(container_id)
    }

    /// From now on this container's transfers use the engine's stream.
    pub(super) fn engine_only(&self, container_id: &str) {
        self.engine_only
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(container_id.to_owned());
    }
}
