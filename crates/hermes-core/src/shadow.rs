//! A box account's `/etc/shadow` entry as `chpasswd --crypt-method SHA512` writes
//! it: SHA-512 crypt (`$6$`, 16 characters of salt, the default 5,000 rounds) and the
//! day of the change. Hermes writes it from the host into a box fresh from the pool,
//! where running `chpasswd` through the engine cost most of a login's wait.

use rand::RngExt;
use sha2::{Digest, Sha512};

/// crypt(3)'s alphabet for salts and hashes.
const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Rounds when a hash names none (what shadow-utils uses without SHA_CRYPT_*_ROUNDS).
const ROUNDS: usize = 5000;
/// Salt length shadow-utils picks for SHA-512.
const SALT_LEN: usize = 16;

/// A fresh salt, as shadow-utils makes one.
pub fn new_salt() -> String {
    let mut rng = rand::rng();
    (0..SALT_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// `$6$<salt>$<hash>` for `password` (the salt cut to 16 bytes, as crypt(3) does).
pub fn sha512_crypt(password: &[u8], salt: &str) -> String {
    let salt = &salt.as_bytes()[..salt.len().min(SALT_LEN)];
    let key = password;

    let alternate: [u8; 64] = Sha512::new()
        .chain_update(key)
        .chain_update(salt)
        .chain_update(key)
        .finalize()
        .into();
    let mut first = Sha512::new().chain_update(key).chain_update(salt);
    let mut left = key.len();
    while left > 64 {
        first.update(alternate);
        left -= 64;
    }
    first.update(&alternate[..left]);
    let mut bits = key.len();
    while bits > 0 {
        if bits & 1 == 1 {
            first.update(alternate);
        } else {
            first.update(key);
        }
        bits >>= 1;
    }
    let mut current: [u8; 64] = first.finalize().into();

    let mut p_digest = Sha512::new();
    for _ in 0..key.len() {
        p_digest.update(key);
    }
    let p_digest: [u8; 64] = p_digest.finalize().into();
    let p_bytes = repeat_to(&p_digest, key.len());

    let mut s_digest = Sha512::new();
    for _ in 0..16 + usize::from(current[0]) {
        s_digest.update(salt);
    }
    let s_digest: [u8; 64] = s_digest.finalize().into();
    let s_bytes = repeat_to(&s_digest, salt.len());

    for round in 0..ROUNDS {
        let mut next = Sha512::new();
        if round % 2 == 1 {
            next.update(&p_bytes);
        } else {
            next.update(current);
        }
        if round % 3 != 0 {
            next.update(&s_bytes);
        }
        if round % 7 != 0 {
            next.update(&p_bytes);
        }
        if round % 2 == 1 {
            next.update(current);
        } else {
            next.update(&p_bytes);
        }
        current = next.finalize().into();
    }

    let mut out = String::with_capacity(3 + salt.len() + 1 + 86);
    out.push_str("$6$");
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    for (high, middle, low) in GROUPS {
        encode(&mut out, current[high], current[middle], current[low], 4);
    }
    encode(&mut out, 0, 0, current[63], 2);
    out
}

/// The digest's bytes in the order crypt(3) encodes them, three at a time.
const GROUPS: [(usize, usize, usize); 21] = [
    (0, 21, 42),
    (22, 43, 1),
    (44, 2, 23),
    (3, 24, 45),
    (25, 46, 4),
    (47, 5, 26),
    (6, 27, 48),
    (28, 49, 7),
    (50, 8, 29),
    (9, 30, 51),
    (31, 52, 10),
    (53, 11, 32),
    (12, 33, 54),
    (34, 55, 13),
    (56, 14, 35),
    (15, 36, 57),
    (37, 58, 16),
    (59, 17, 38),
    (18, 39, 60),
    (40, 61, 19),
    (62, 20, 41),
];

fn encode(out: &mut String, high: u8, middle: u8, low: u8, chars: usize) {
    let mut word = (u32::from(high) << 16) | (u32::from(middle) << 8) | u32::from(low);
    for _ in 0..chars {
        out.push(char::from(ALPHABET[(word & 0x3f) as usize]));
        word >>= 6;
    }
}

fn repeat_to(digest: &[u8; 64], len: usize) -> Vec<u8> {
    digest.iter().copied().cycle().take(len).collect()
}

/// `shadow` with `account`'s password set to `password` (hashed with a fresh salt)
/// as of `day`; None, without hashing, when no line is the account's.
pub fn set_password(shadow: &[u8], account: &str, password: &[u8], day: u64) -> Option<Vec<u8>> {
    let prefix = format!("{account}:");
    shadow
        .split(|&b| b == b'\n')
        .any(|line| line.starts_with(prefix.as_bytes()))
        .then(|| with_password(shadow, account, &sha512_crypt(password, &new_salt()), day))?
}

/// `shadow` with `account`'s password field set to `hash` and its last-change field
/// to `day` (days since 1970), everything else byte for byte as it was; None when no
/// line is the account's.
fn with_password(shadow: &[u8], account: &str, hash: &str, day: u64) -> Option<Vec<u8>> {
    let prefix = format!("{account}:");
    let mut out = Vec::with_capacity(shadow.len() + hash.len());
    let mut found = false;
    for line in shadow.split_inclusive(|&b| b == b'\n') {
        if found || !line.starts_with(prefix.as_bytes()) {
            out.extend_from_slice(line);
            continue;
        }
        found = true;
        let (body, end) = match line.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (line, &b""[..]),
        };
        let mut fields: Vec<&[u8]> = body.split(|&b| b == b':').collect();
        let day = day.to_string();
        while fields.len() < 3 {
            fields.push(b"");
        }
        fields[1] = hash.as_bytes();
        fields[2] = day.as_bytes();
        out.extend_from_slice(&fields.join(&b':'));
        out.extend_from_slice(end);
    }
    found.then_some(out)
}

/// Today as shadow counts days: whole days since 1970-01-01 UTC.
pub fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_glibcs() {
        // The example of the SHA-crypt specification.
        assert_eq!(
            sha512_crypt(b"Hello world!", "saltstring"),
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
    }

    #[test]
    fn the_hash_matches_the_systems_crypt_for_awkward_passwords() {
        let long = "x".repeat(200);
        for (password, salt) in [
            ("toor", "KsQn//rO9RIcLWOf"),
            ("", "abcdefghijklmnop"),
            ("pass:word with spaces", "0123456789ABCDEF"),
            ("pässwörd", "./././././././."),
            (long.as_str(), "Zz"),
        ] {
            let setting = format!("$6${salt}$");
            let system = std::process::Command::new("perl")
                .args(["-e", "print crypt($ARGV[0], $ARGV[1])", password, &setting])
                .output()
                .expect("perl");
            let system = String::from_utf8(system.stdout).expect("utf-8");
            assert_eq!(
                sha512_crypt(password.as_bytes(), salt),
                system,
                "{password:?}"
            );
        }
    }

    #[test]
    fn a_salt_is_sixteen_characters_of_crypts_alphabet() {
        let salt = new_salt();
        assert_eq!(salt.len(), 16);
        assert!(salt.bytes().all(|b| ALPHABET.contains(&b)));
        assert_ne!(salt, new_salt());
    }

    #[test]
    fn only_the_accounts_password_and_day_change() {
        let shadow =
            b"root:$y$old:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\nrootless:*:1::::::\n";
        let out = with_password(shadow, "root", "$6$s$h", 20793).expect("root is there");
        assert_eq!(
            out,
            b"root:$6$s$h:20793:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\nrootless:*:1::::::\n"
        );
        let out = with_password(shadow, "rootless", "$6$s$h", 5).expect("there");
        assert!(out.ends_with(b"rootless:$6$s$h:5::::::\n"));
        assert!(out.starts_with(b"root:$y$old:"));
        assert_eq!(with_password(shadow, "nobody", "$6$s$h", 5), None);
        assert_eq!(with_password(shadow, "roo", "$6$s$h", 5), None);
        assert_eq!(set_password(shadow, "roo", b"pw", 5), None);
        let set = set_password(shadow, "daemon", b"pw", 5).expect("there");
        let line = String::from_utf8(set).expect("utf-8");
        let hash = line
            .lines()
            .nth(1)
            .and_then(|l| l.split(':').nth(1))
            .expect("hash");
        assert_eq!(sha512_crypt(b"pw", &hash[3..19]), hash);
        // No final newline, a short line, a line that is not UTF-8.
        assert_eq!(
            with_password(b"\xffx:1\nadmin:x", "admin", "$6$a$b", 7).expect("there"),
            b"\xffx:1\nadmin:$6$a$b:7"
        );
    }
}
