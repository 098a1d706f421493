//! An engine on another host over TLS with client certificates (Docker's
//! `--tlsverify` setup): Hermes works through it, exec streams included, and the
//! engine's side refuses a client without a certificate. The far side here is a TLS
//! terminator (the socket proxy image's HAProxy) in front of the local socket.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hermes_core::config::DockerTlsConfig;

use crate::client::Client;
use crate::harness::{Hermes, Options, unique_sensor};
use crate::ports::published_port;

fn run(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost and a client certificate, as
/// Docker's documentation makes them.
fn make_certificates(dir: &Path) {
    run(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=hermes test CA",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        let key = format!("{name}-key.pem");
        let csr = format!("{name}.csr");
        let cert = format!("{name}.pem");
        run(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        );
        run(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                ext,
                "-out",
                &cert,
            ],
        );
    }
    let bundle = [
        std::fs::read(dir.join("server.pem")).expect("cert"),
        std::fs::read(dir.join("server-key.pem")).expect("key"),
    ]
    .concat();
    std::fs::write(dir.join("server-bundle.pem"), bundle).expect("bundle");
}

struct Terminator(String);

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hermes_reaches_an_engine_over_tls_with_a_client_certificate() {
    require_docker!();
    let have_proxy_image = Command::new("docker")
        .args(["image", "inspect", "hermes-socket-proxy:latest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_proxy_image {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "hermes-socket-proxy image missing"
        );
        eprintln!("SKIPPED: hermes-socket-proxy image missing");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    make_certificates(dir.path());
    std::fs::write(
        dir.path().join("haproxy.cfg"),
        "global\n    log stdout format raw local0 info\ndefaults\n    mode tcp\n    timeout connect 10s\n    timeout client 1h\n    timeout server 1h\nfrontend tls\n    bind :2376 ssl crt /certs/server-bundle.pem ca-file /certs/ca.pem verify required\n    default_backend engine\nbackend engine\n    server engine /var/run/docker.sock\n",
    )
    .expect("config");
    let name = format!("hermes-tls-{}", unique_sensor());
    let started = Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &name,
            "-p",
            "127.0.0.1:0:2376",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
        ])
        .arg("-v")
        .arg(format!("{}:/certs:ro", dir.path().display()))
        .args([
            "--entrypoint",
            "/usr/sbin/haproxy",
            "hermes-socket-proxy:latest",
            "-db",
            "-f",
            "/certs/haproxy.cfg",
        ])
        .output()
        .expect("docker run");
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let _terminator = Terminator(name.clone());
    let port = published_port(&name, 2376);
    std::thread::sleep(Duration::from_millis(500));

    // Without a client certificate the engine's side does not answer.
    let anonymous = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(dir.path().join("ca.pem"))
        .arg(format!("https://localhost:{port}/_ping"))
        .output()
        .expect("curl");
    assert!(
        !anonymous.status.success(),
        "{}",
        String::from_utf8_lossy(&anonymous.stdout)
    );
    let with_certificate = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(dir.path().join("ca.pem"))
        .arg("--cert")
        .arg(dir.path().join("client.pem"))
        .arg("--key")
        .arg(dir.path().join("client-key.pem"))
        .arg(format!("https://localhost:{port}/_ping"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&with_certificate.stdout), "OK");

    let tls = DockerTlsConfig {
        ca: dir.path().join("ca.pem"),
        cert: dir.path().join("client.pem"),
        key: dir.path().join("client-key.pem"),
    };
    let hermes = tokio::task::block_in_place(|| {
        Hermes::start(
            Options {
                docker_url: Some(format!("https://localhost:{port}")),
                pool_size: 1,
                ..Options::default()
            }
            .configure(move |c| c.docker.tls = Some(tls.clone())),
        )
    });
    assert!(
        hermes
            .output()
            .contains(&format!("https://localhost:{port}")),
        "{}",
        hermes.output()
    );
    let client = Client::login(hermes.port, "root", "toor").await;
    let mut exec = client.exec("echo over-tls; cat /etc/debian_version").await;
    assert!(exec.read_to_close(Duration::from_secs(30)).await);
    assert!(exec.text().starts_with("over-tls\n12."), "{}", exec.text());
    let (_, mut shell) = crate::client::root_shell(hermes.port).await;
    let out = shell
        .run("echo typed-over-tls", crate::client::ROOT_PROMPT)
        .await;
    assert!(out.contains("typed-over-tls"), "{out}");
}
