//! The standby launcher: started ahead on a terminal in each pool container, it waits
//! for a session's parameters and then becomes that session's login, so a login with a
//! terminal costs no engine round trip (creating and starting an exec under a busy
//! engine took hundreds of milliseconds).
//!
//! The parameters arrive as one line on its terminal: rows, columns, and the session
//! parameters with every byte outside a safe set written as `\xHH` (bash's `printf %b`
//! turns them back), so no byte of them is a terminal control character. An empty
//! line makes it exit without a trace.

use crate::sandbox::{ProcessSpec, StandbySpec, TtySize};

/// Waits with echo off and the line discipline out of the way, restores the terminal
/// (with the session's size), and replaces itself as the plain launcher does. `read -n`
/// reads its line a byte at a time: a plain `read` on a non-canonical terminal takes
/// whatever has arrived, so a client's first keystrokes sent right behind the
/// parameters would end in bash's buffer and be lost at its `exec`.
const STANDBY_LAUNCHER: &str = r#"helper=$SSH_SESSION_HELPER
unset SSH_SESSION_HELPER
[ -n "$helper" ] || exit 0
saved=$(stty -g 2> /dev/null)
stty -echo -icanon 2> /dev/null || exit 0
printf '\006'
IFS=' ' read -r -n 16777216 rows cols encoded || exit 0
[ -n "$encoded" ] || exit 0
stty "$saved" rows "$rows" cols "$cols" 2> /dev/null
printf -v params '%b' "$encoded"
unset encoded saved
user=${params#user=}
user=${user%%$'\n'*}
t=$(tty 2> /dev/null) && t=${t#/dev/} || t=notty
exec 3<&0 6<<< "$params"
exec -c -a "sshd: $user@$t" /bin/bash <<< "$helper""#;

/// What the sandbox starts ahead in each ready container, the byte it prints once its
/// terminal is quiet (before that, a line written to it would be echoed back), and the
/// input that makes an unused one exit.
pub fn standby_spec() -> StandbySpec {
    StandbySpec {
        process: ProcessSpec {
            argv: vec![
                "/bin/bash".to_owned(),
                "-c".to_owned(),
                STANDBY_LAUNCHER.to_owned(),
            ],
            env: vec![(
                "SSH_SESSION_HELPER".to_owned(),
                super::launch::session_helper().to_owned(),
            )],
            user: "root".to_owned(),
            workdir: "/".to_owned(),
            tty: Some(TtySize::DEFAULT),
            standby_input: None,
            file_transfer: false,
        },
        ready: vec![0x06],
        cancel: b"\n".to_vec(),
    }
}

/// The line that turns a waiting standby into the session with `params` (the helper's
/// NAME=value lines) on a terminal of `size`.
pub fn standby_input(size: TtySize, params: &str) -> Vec<u8> {
    let mut line = format!("{} {} ", size.height, size.width).into_bytes();
    for &byte in params.as_bytes() {
        if byte == 0 {
            continue; // bash variables cannot hold NUL
        }
        if byte.is_ascii_alphanumeric() || b"=_-.,:/@+".contains(&byte) {
            line.push(byte);
        } else {
            line.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
        }
    }
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What bash makes of the encoded parameters, exactly as the launcher decodes them.
    fn decoded_by_bash(input: &[u8]) -> (String, String, Vec<u8>) {
        let text = String::from_utf8(input.to_vec()).expect("ascii");
        let line = text.strip_suffix('\n').expect("one line");
        let output = Command::new("/bin/bash")
            .arg("-c")
            .arg(r#"IFS=' ' read -r rows cols encoded <<< "$1"; printf -v p '%b' "$encoded"; printf '%s %s|%s' "$rows" "$cols" "$p""#)
            .arg("bash")
            .arg(line)
            .output()
            .expect("bash");
        let out = output.stdout;
        let bar = out.iter().position(|b| *b == b'|').expect("separator");
        let head = String::from_utf8_lossy(&out[..bar]).into_owned();
        let (rows, cols) = head.split_once(' ').expect("two numbers");
        (rows.to_owned(), cols.to_owned(), out[bar + 1..].to_vec())
    }

    #[test]
    fn every_byte_of_the_parameters_survives_the_terminal_line() {
        let hostile: String = (1u8..=127).map(char::from).collect::<String>()
            + "é\u{202e}\u{1b}[2J\\x41\\c%s%b\n\r\t\u{3}\u{4}\u{15}";
        let params =
            format!("user=root\nterm=xterm\nenv=LC_X={hostile}\ncommand=echo '$x' \\\nnext");
        let input = standby_input(TtySize::sanitized(132, 43), &params);
        // Nothing the line discipline or the shell would act on: printable ASCII only.
        let (body, end) = input.split_at(input.len() - 1);
        assert_eq!(end, b"\n");
        assert!(body.iter().all(|b| (0x20..0x7f).contains(b)), "{body:?}");
        let (rows, cols, decoded) = decoded_by_bash(&input);
        assert_eq!((rows.as_str(), cols.as_str()), ("43", "132"));
        assert_eq!(decoded, params.into_bytes());
    }

    #[test]
    fn nul_bytes_are_dropped_not_passed_on() {
        let input = standby_input(TtySize::DEFAULT, "user=a\0b");
        let (_, _, decoded) = decoded_by_bash(&input);
        assert_eq!(decoded, b"user=ab");
    }

    #[test]
    fn the_standby_runs_on_a_terminal_as_root() {
        let spec = standby_spec();
        assert!(spec.process.tty.is_some());
        assert_eq!(spec.process.user, "root");
        assert_eq!(spec.cancel, b"\n");
        assert_eq!(spec.ready, [0x06]);
        assert!(spec.process.argv[2].contains("printf '\\006'"));
        // The launcher parses as bash.
        let status = Command::new("/bin/bash")
            .args(["-n", "-c"])
            .arg(&spec.process.argv[2])
            .status()
            .expect("bash");
        assert!(status.success());
    }
}
