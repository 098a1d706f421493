//! The server Hermes impersonates: Debian 12's packaged OpenSSH by default.
//!
//! The algorithm lists are OpenSSH 9.2's server lists in its order (measured, see
//! `shared/reference/openssh-debian12.md`). The SSH adapter offers the subset its
//! library implements, keeping this order.

/// Banner used when the configuration says `auto` and the image carries no label.
pub const DEFAULT_SSH_BANNER: &str = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10";

/// Key exchange methods of Debian 12's sshd, in its order.
pub const KEX: &[&str] = &[
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
    "kex-strict-s-v00@openssh.com",
];

/// Host key algorithms of Debian 12's sshd with its three default host keys.
pub const HOST_KEY: &[&str] = &[
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ecdsa-sha2-nistp256",
    "ssh-ed25519",
];

/// Ciphers (both directions).
pub const CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
];

/// MACs (both directions).
pub const MACS: &[&str] = &[
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha1-etm@openssh.com",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
];

/// Compression methods.
pub const COMPRESSION: &[&str] = &["none", "zlib@openssh.com"];

/// Environment variable names Debian's sshd_config accepts (`AcceptEnv LANG LC_*`).
pub fn accepts_env(name: &str) -> bool {
    name == "LANG" || name.starts_with("LC_")
}

/// The command Debian's sshd_config runs for a subsystem (`Subsystem sftp
/// /usr/lib/openssh/sftp-server`); None for names sshd refuses.
pub fn subsystem_command(name: &str) -> Option<&'static str> {
    (name == "sftp").then_some("/usr/lib/openssh/sftp-server")
}

/// Key exchange names Hermes's SSH transport implements (checked against the
/// transport in its own tests).
pub const SUPPORTED_KEX: &[&str] = &[
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group17-sha512",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group15-sha512",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group14-sha1",
    "diffie-hellman-group1-sha1",
    "ext-info-s",
    "kex-strict-s-v00@openssh.com",
];

/// Host key algorithms the transport can sign with (Hermes keeps RSA, ECDSA P-256 and
/// Ed25519 host keys).
pub const SUPPORTED_HOST_KEY: &[&str] = &[
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ssh-ed25519",
];

/// Ciphers the transport implements.
pub const SUPPORTED_CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
];

/// MACs the transport implements.
pub const SUPPORTED_MACS: &[&str] = &[
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha1-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
];

/// Compression methods the transport implements.
pub const SUPPORTED_COMPRESSION: &[&str] = &["none", "zlib@openssh.com", "zlib"];

/// The persona's names that the transport implements, in the persona's order.
pub fn offered(persona: &[&'static str], supported: &[&str]) -> Vec<&'static str> {
    persona
        .iter()
        .copied()
        .filter(|name| supported.contains(name))
        .collect()
}

/// The persona's names the transport cannot offer.
pub fn left_out(persona: &[&'static str], supported: &[&str]) -> Vec<&'static str> {
    persona
        .iter()
        .copied()
        .filter(|name| !supported.contains(name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sntrup_and_umac_are_left_out_of_debians_lists() {
        let mut missing = Vec::new();
        for (persona, supported) in [
            (KEX, SUPPORTED_KEX),
            (HOST_KEY, SUPPORTED_HOST_KEY),
            (CIPHERS, SUPPORTED_CIPHERS),
            (MACS, SUPPORTED_MACS),
            (COMPRESSION, SUPPORTED_COMPRESSION),
        ] {
            missing.extend(left_out(persona, supported));
        }
        assert_eq!(
            missing,
            [
                "sntrup761x25519-sha512",
                "sntrup761x25519-sha512@openssh.com",
                "umac-64-etm@openssh.com",
                "umac-128-etm@openssh.com",
                "umac-64@openssh.com",
                "umac-128@openssh.com",
            ]
        );
    }
}
