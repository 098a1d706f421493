//! How a channel's process is started: the launcher `docker exec` runs, and the
//! session parameters it hands the image's session helper (or a waiting standby).
//! Pure: the same request always gives the same process.

use std::net::SocketAddr;

use crate::sandbox::{ProcessSpec, TtySize};

/// Started by `docker exec`: keeps the client's stdin on fd 3, hands the parameters
/// over on fd 6, and replaces itself (empty environment, sshd's process title) with a
/// bash reading the session helper ([`session_helper`]) from a pipe: no file in the
/// box holds it. Without one (a caller that passes none), a plain login shell or
/// command.
const LAUNCHER: &str = r#"helper=$SSH_SESSION_HELPER
unset SSH_SESSION_HELPER
if [ -z "$helper" ]; then
  command=$SSH_SESSION_COMMAND
  unset SSH_SESSION_PARAMS SSH_SESSION_USER SSH_SESSION_COMMAND HOSTNAME
  if [ -z "$command" ]; then exec -a -bash /bin/bash; fi
  exec /bin/bash -c "$command"
fi
unset SSH_SESSION_COMMAND
if [ -z "$SSH_SESSION_PARAMS" ]; then
  echo "the engine passed no session parameters" >&2
  exit 255
fi
t=$(tty 2> /dev/null) && t=${t#/dev/} || t=notty
exec 3<&0 6<<< "$SSH_SESSION_PARAMS"
exec -c -a "sshd: $SSH_SESSION_USER@$t" /bin/bash <<< "$helper""#;

/// The session helper's source and the login-record writer it embeds.
const HELPER_SOURCE: &str = include_str!("box_login.sh");
const RECORDS_SOURCE: &str = include_str!("box_records.py");

/// The session helper as it is handed to the box: the record writer put in, and
/// every comment line (which is for this repository) taken out.
pub(crate) fn session_helper() -> &'static str {
    static HELPER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let without_comments = |source: &str| -> String {
            source
                .lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .map(|line| format!("{line}\n"))
                .collect()
        };
        without_comments(HELPER_SOURCE).replace("@RECORDS@\n", &without_comments(RECORDS_SOURCE))
    });
    &HELPER
}

/// What the client asked the channel to run.
pub(super) enum Program {
    Shell,
    Exec(String),
    /// A subsystem, by the command sshd's `Subsystem` line gives it.
    Subsystem {
        name: String,
        command: String,
    },
}

/// An accepted `x11-req`: what the session's xauth is given.
pub(super) struct X11Forward {
    pub(super) protocol: String,
    pub(super) cookie: String,
    pub(super) screen: u32,
}

/// What a channel asks to run, with everything that shapes its process.
pub(super) struct Launch<'a> {
    pub(super) program: &'a Program,
    /// The login name (the account is derived from it).
    pub(super) username: &'a str,
    pub(super) src: SocketAddr,
    pub(super) dst: SocketAddr,
    /// The terminal type and size, when a terminal was asked for.
    pub(super) pty: Option<&'a (String, TtySize)>,
    /// Accepted `env` requests.
    pub(super) env: &'a [(String, String)],
    pub(super) x11: Option<&'a X11Forward>,
    pub(super) agent: bool,
}

/// The process that stands in for sshd's session: the image's session helper (run
/// as "sshd: USER@pts/N") creates the account, writes utmp/wtmp/lastlog, prints the
/// MOTD and "Last login:", and runs the user's shell or command as that user. The
/// parameters travel in one variable that the launcher consumes before it replaces
/// itself, so no process in the container shows them.
pub(super) fn process_spec(launch: &Launch<'_>) -> ProcessSpec {
    let program = launch.program;
    let account = account_name(launch.username);
    let (mode, command) = match program {
        Program::Shell => ("pty", String::new()),
        Program::Exec(command) if launch.pty.is_some() => ("pty-exec", command.clone()),
        Program::Exec(command) => ("notty", command.clone()),
        Program::Subsystem { command, .. } => ("subsystem", command.clone()),
    };
    let term = launch.pty.map(|(term, _)| term.clone()).unwrap_or_default();
    let lang = launch
        .env
        .iter()
        .find(|(name, _)| name == "LANG")
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| "C.UTF-8".to_owned());
    // NAME=value lines the helper reads; the command comes last and may span lines.
    let mut params = vec![
        ("user", account.clone()),
        ("src", launch.src.ip().to_canonical().to_string()),
        ("src_port", launch.src.port().to_string()),
        ("dst", launch.dst.ip().to_canonical().to_string()),
        ("dst_port", launch.dst.port().to_string()),
        ("term", term),
        ("lang", lang),
        ("mode", mode.to_owned()),
    ];
    if let Program::Subsystem { name, .. } = program {
        params.push(("subsystem", name.clone()));
    }
    if let Some(x11) = launch.x11 {
        params.push((
            "x11",
            format!(
                "{} {} {}",
                token(&x11.protocol),
                token(&x11.cookie),
                x11.screen
            ),
        ));
    }
    if launch.agent {
        params.push(("agent", "1".to_owned()));
    }
    // Accepted `env` requests (LANG is `lang`): the helper sets them for the user.
    for (name, value) in launch.env.iter().filter(|(name, _)| name != "LANG") {
        params.push(("env", format!("{name}={value}")));
    }
    let mut params: String = params
        .into_iter()
        .map(|(name, value)| format!("{name}={}\n", one_line(&value)))
        .collect();
    params.push_str("command=");
    params.push_str(&command);
    let standby_input = launch
        .pty
        .map(|(_, size)| super::standby::standby_input(*size, &params));
    let mut env = vec![
        ("SSH_SESSION_PARAMS".to_owned(), params),
        ("SSH_SESSION_USER".to_owned(), account),
        ("SSH_SESSION_HELPER".to_owned(), session_helper().to_owned()),
    ];
    match program {
        Program::Exec(command) | Program::Subsystem { command, .. } => {
            env.push(("SSH_SESSION_COMMAND".to_owned(), command.clone()));
        }
        Program::Shell => {}
    }
    if let Some((term, _)) = launch.pty {
        env.push(("TERM".to_owned(), term.clone()));
    }
    env.extend(
        launch
            .env
            .iter()
            .filter(|(name, _)| name != "LANG")
            .cloned(),
    );
    ProcessSpec {
        argv: vec!["/bin/bash".to_owned(), "-c".to_owned(), LAUNCHER.to_owned()],
        env,
        user: "root".to_owned(),
        workdir: "/".to_owned(),
        tty: launch.pty.map(|(_, size)| *size),
        standby_input,
        file_transfer: is_file_transfer(program, launch.pty.is_some()),
    }
}

/// Whether a channel moves files: the sftp subsystem, or scp without a terminal.
pub(super) fn is_file_transfer(program: &Program, pty: bool) -> bool {
    match program {
        Program::Subsystem { name, .. } => name == "sftp",
        Program::Exec(command) if !pty => command
            .split_whitespace()
            .next()
            .is_some_and(|word| word.rsplit('/').next() == Some("scp")),
        _ => false,
    }
}

/// The account a login name gets in the container: the name itself when it is one
/// `useradd` takes safely, else `user`.
pub(super) fn account_name(login: &str) -> String {
    if crate::config::valid_login_name(login) {
        login.to_owned()
    } else {
        "user".to_owned()
    }
}

/// Keeps a parameter on one line (the helper reads them line by line).
fn one_line(text: &str) -> String {
    text.chars().filter(|c| *c != '\n' && *c != '\r').collect()
}

/// Keeps one space-separated field a field.
fn token(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_graphic()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_names_nothing_and_parses() {
        let helper = session_helper();
        let lowered = helper.to_ascii_lowercase();
        for word in [
            "hermes",
            "honeypot",
            "@records@",
            "box_records",
            "ssh-session",
        ] {
            assert!(!lowered.contains(word), "the helper says `{word}`");
        }
        assert!(!helper.lines().any(|l| l.trim_start().starts_with('#')));
        assert!(
            helper.starts_with("{\nexec 0< /dev/null\n"),
            "{}",
            &helper[..60]
        );
        assert!(helper.contains("def main():"), "the record writer is in it");
        let status = std::process::Command::new("bash")
            .args(["-n", "-c", helper])
            .status()
            .expect("bash");
        assert!(status.success(), "bash -n");
        let records = helper
            .split("<<'RECORDS'\n")
            .nth(1)
            .and_then(|rest| rest.split("\nRECORDS\n").next())
            .expect("the records heredoc");
        let compiled = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys; compile(sys.argv[1], 'records', 'exec')",
                records,
            ])
            .status()
            .expect("python3");
        assert!(compiled.success(), "python compiles the record writer");
        // It travels in an exec's environment, through the compose stack's socket
        // proxy (which refuses bodies over 60,000 bytes or with JSON escapes `\u`),
        // and in a here-string that bash keeps in a pipe only below 64 KiB.
        let body = serde_json::to_string(helper).expect("JSON");
        assert!(body.len() < 20_000, "{} bytes", body.len());
        assert!(!body.contains("\\u"), "a JSON escape in the helper");
    }

    #[test]
    fn file_transfers_are_scp_without_a_terminal_and_sftp() {
        let exec = |c: &str| Program::Exec(c.to_owned());
        let subsystem = |name: &str| Program::Subsystem {
            name: name.to_owned(),
            command: String::new(),
        };
        assert!(is_file_transfer(&exec("scp -t /tmp"), false));
        assert!(is_file_transfer(&exec("/usr/bin/scp -f -- x"), false));
        assert!(is_file_transfer(&subsystem("sftp"), false));
        assert!(!is_file_transfer(&exec("scp -t /tmp"), true));
        assert!(!is_file_transfer(&exec("cat x | scp"), false));
        assert!(!is_file_transfer(&exec("wget http://x/scp"), false));
        assert!(!is_file_transfer(&Program::Shell, false));
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    fn env_of<'a>(spec: &'a ProcessSpec, name: &str) -> Option<&'a str> {
        spec.env
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_terminal_shell_gets_its_parameters_for_the_helper_and_the_standby() {
        let pty = ("xterm-256color".to_owned(), TtySize::sanitized(120, 40));
        let env = vec![
            ("LANG".to_owned(), "de_DE.UTF-8".to_owned()),
            ("LC_X".to_owned(), "a\nb\rc".to_owned()),
        ];
        let x11 = X11Forward {
            protocol: "MIT-MAGIC-COOKIE-1 \n".to_owned(),
            cookie: "ab cd".to_owned(),
            screen: 0,
        };
        let spec = process_spec(&Launch {
            program: &Program::Shell,
            username: "root",
            src: addr("[::ffff:198.51.100.7]:50000"),
            dst: addr("203.0.113.5:22"),
            pty: Some(&pty),
            env: &env,
            x11: Some(&x11),
            agent: true,
        });
        let params = env_of(&spec, "SSH_SESSION_PARAMS").expect("params");
        assert_eq!(
            params,
            "user=root\nsrc=198.51.100.7\nsrc_port=50000\ndst=203.0.113.5\ndst_port=22\n\
             term=xterm-256color\nlang=de_DE.UTF-8\nmode=pty\nx11=MIT-MAGIC-COOKIE-1 abcd 0\n\
             agent=1\nenv=LC_X=abc\ncommand="
        );
        assert_eq!(env_of(&spec, "SSH_SESSION_USER"), Some("root"));
        assert_eq!(env_of(&spec, "TERM"), Some("xterm-256color"));
        assert_eq!(env_of(&spec, "SSH_SESSION_COMMAND"), None);
        assert_eq!(env_of(&spec, "LANG"), None, "LANG travels as lang=");
        assert_eq!(spec.tty, Some(TtySize::sanitized(120, 40)));
        assert_eq!(spec.user, "root");
        assert_eq!(spec.argv[..2], ["/bin/bash", "-c"]);
        // The standby gets the same parameters on one line of its terminal.
        let standby = spec.standby_input.expect("standby input");
        assert!(standby.starts_with(b"40 120 user=root\\x0asrc="));
        assert!(!spec.file_transfer);
    }

    /// What a channel without a terminal, env, X11 or agent starts for `program`.
    fn without_terminal(program: &Program, username: &str) -> ProcessSpec {
        process_spec(&Launch {
            program,
            username,
            src: addr("127.0.0.1:40000"),
            dst: addr("127.0.0.1:2222"),
            pty: None,
            env: &[],
            x11: None,
            agent: false,
        })
    }

    #[test]
    fn commands_without_a_terminal_carry_their_command_and_no_standby_input() {
        let exec = Program::Exec("scp -t /root/".to_owned());
        let spec = without_terminal(&exec, "Admin;rm -rf /");
        let params = env_of(&spec, "SSH_SESSION_PARAMS").expect("params");
        assert!(params.starts_with("user=user\n"), "{params}");
        assert!(
            params.contains("\nterm=\nlang=C.UTF-8\nmode=notty\n"),
            "{params}"
        );
        assert!(params.ends_with("\ncommand=scp -t /root/"), "{params}");
        assert_eq!(env_of(&spec, "SSH_SESSION_COMMAND"), Some("scp -t /root/"));
        assert_eq!(env_of(&spec, "SSH_SESSION_USER"), Some("user"));
        assert_eq!(spec.tty, None);
        assert_eq!(spec.standby_input, None);
        assert!(spec.file_transfer);

        let sftp = Program::Subsystem {
            name: "sftp".to_owned(),
            command: "/usr/lib/openssh/sftp-server".to_owned(),
        };
        let spec = without_terminal(&sftp, "admin");
        let params = env_of(&spec, "SSH_SESSION_PARAMS").expect("params");
        assert!(
            params.contains("\nmode=subsystem\nsubsystem=sftp\n"),
            "{params}"
        );
        assert!(spec.file_transfer);
    }

    #[test]
    fn the_account_is_the_login_when_useradd_takes_it_safely() {
        assert_eq!(account_name("root"), "root");
        assert_eq!(account_name("deploy_01-x"), "deploy_01-x");
        for hostile in [
            "",
            "Admin",
            "1abc",
            "a b",
            "../etc",
            "x;id",
            &"a".repeat(33),
        ] {
            assert_eq!(account_name(hostile), "user", "{hostile:?}");
        }
    }
}
