//! Sanitising attacker output before `hermes replay` writes it to the operator's terminal.
//!
//! A recording is whatever the attacker's shell printed, so it can carry sequences that
//! attack the terminal replaying it: OSC 52 writes the clipboard, OSC 0/2 set the window
//! title, DSR/DA (`ESC[6n`, `ESC[c`) and window reports make the terminal type an answer
//! into whatever reads the operator's keyboard next, mouse and focus modes do the same
//! on every click, and 8-bit C1 controls (`U+009B`) are CSI on some terminals.
//!
//! [`Sanitizer`] keeps text (`\r`, `\n`, `\t`, `\b` and printable characters) and an
//! allow-list of display sequences (colours, cursor movement, erasing, scroll regions,
//! the alternate screen vim and top use, keypad and charset selection) and drops
//! everything else. It is a state machine over characters, so a sequence split across
//! recording events is recognised, and every state is bounded.

/// Longest CSI body (parameters and intermediates) kept; longer ones are dropped whole.
pub const MAX_CSI: usize = 64;
/// Longest OSC/DCS/APC/PM/SOS string dropped as a string; past it the sanitiser gives up
/// on the string and treats what follows as text (still sanitised), so an unterminated
/// string cannot hide the rest of a session.
pub const MAX_STRING: usize = 64 * 1024;

const ESC: char = '\x1b';
const BEL: char = '\x07';
const CAN: char = '\x18';
const SUB: char = '\x1a';
const ST_8BIT: char = '\u{9c}';

/// CSI final characters that only change what is displayed.
const CSI_FINALS: &str = "@ABCDEFGHJKLMPSTXdfmrsuhl";
/// DEC private modes (`CSI ? n h/l`) kept: cursor keys, autowrap, cursor blink and
/// visibility, the alternate screen. Mouse, focus, paste and other reporting modes are not.
const PRIVATE_MODES: [u16; 8] = [1, 7, 12, 25, 47, 1047, 1048, 1049];
/// ANSI modes (`CSI n h/l`) kept: insert.
const ANSI_MODES: [u16; 1] = [4];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Text.
    Ground,
    /// After ESC.
    Escape,
    /// After ESC and an intermediate: dropped up to its final character.
    EscapeIgnore,
    /// After `ESC (` or `ESC )`: the charset character comes next.
    Charset(char),
    /// Inside `ESC [`, collecting the body.
    Csi,
    /// Inside a CSI that is dropped (too long): skipped up to its final character.
    CsiIgnore,
    /// Inside an OSC (`bel_ends`) or DCS/APC/PM/SOS string, dropped.
    String { bel_ends: bool, len: usize },
}

/// Terminal state the kept sequences changed, so [`Sanitizer::finish`] can put it back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Modes {
    sgr: bool,
    alt_screen: bool,
    cursor_hidden: bool,
    no_autowrap: bool,
    app_cursor_keys: bool,
    insert: bool,
    scroll_region: bool,
    app_keypad: bool,
    g0_charset: bool,
}

/// Streaming filter from attacker output to text safe for the operator's terminal.
#[derive(Debug, Clone)]
pub struct Sanitizer {
    state: State,
    csi: String,
    modes: Modes,
}

impl Default for Sanitizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Sanitizer {
    /// A sanitiser in the ground state.
    pub fn new() -> Self {
        Self {
            state: State::Ground,
            csi: String::with_capacity(MAX_CSI),
            modes: Modes::default(),
        }
    }

    /// Sanitises the next piece of output; a sequence may continue in the next call.
    pub fn feed(&mut self, input: &str) -> String {
        let mut out = String::with_capacity(input.len());
        for c in input.chars() {
            self.step(c, &mut out);
        }
        out
    }

    /// Ends the stream: drops any unfinished sequence and returns the sequences that
    /// undo what the kept ones left set (alternate screen, hidden cursor, colours,
    /// keypad and cursor-key modes, scroll region, charset).
    pub fn finish(&mut self) -> String {
        self.state = State::Ground;
        self.csi.clear();
        let modes = std::mem::take(&mut self.modes);
        let mut out = String::new();
        if modes.alt_screen {
            out.push_str("\x1b[?1049l");
        }
        if modes.scroll_region {
            // Resetting the margins homes the cursor: save and restore it around.
            out.push_str("\x1b7\x1b[r\x1b8");
        }
        if modes.insert {
            out.push_str("\x1b[4l");
        }
        if modes.app_cursor_keys {
            out.push_str("\x1b[?1l");
        }
        if modes.no_autowrap {
            out.push_str("\x1b[?7h");
        }
        if modes.cursor_hidden {
            out.push_str("\x1b[?25h");
        }
        if modes.app_keypad {
            out.push_str("\x1b>");
        }
        if modes.g0_charset {
            out.push_str("\x1b(B");
        }
        if modes.sgr {
            out.push_str("\x1b[0m");
        }
        out
    }

    fn step(&mut self, c: char, out: &mut String) {
        match self.state {
            State::Ground => self.ground(c, out),
            State::String { bel_ends, len } => self.string(c, bel_ends, len),
            State::Escape => self.escape(c, out),
            State::EscapeIgnore => match c {
                '\x20'..='\x2f' => {}
                '\x30'..='\x7e' => self.state = State::Ground,
                _ => self.interrupt(c, out),
            },
            State::Charset(which) => match c {
                '\x30'..='\x7e' => {
                    out.extend([ESC, which, c]);
                    if which == '(' {
                        self.modes.g0_charset = c != 'B';
                    }
                    self.state = State::Ground;
                }
                // Multi-character designations (`ESC ( % 5`) are not kept.
                '\x20'..='\x2f' => self.state = State::EscapeIgnore,
                _ => self.interrupt(c, out),
            },
            State::Csi => match c {
                '\x20'..='\x3f' => {
                    self.csi.push(c);
                    if self.csi.len() > MAX_CSI {
                        self.csi.clear();
                        self.state = State::CsiIgnore;
                    }
                }
                '\x40'..='\x7e' => {
                    if self.csi_allowed(c) {
                        out.push(ESC);
                        out.push('[');
                        out.push_str(&self.csi);
                        out.push(c);
                    }
                    self.csi.clear();
                    self.state = State::Ground;
                }
                _ => self.interrupt(c, out),
            },
            State::CsiIgnore => match c {
                '\x20'..='\x3f' => {}
                '\x40'..='\x7e' => self.state = State::Ground,
                _ => self.interrupt(c, out),
            },
        }
    }

    fn ground(&mut self, c: char, out: &mut String) {
        match c {
            ESC => self.state = State::Escape,
            '\r' | '\n' | '\t' | '\x08' => out.push(c),
            // Other C0 controls, DEL and the C1 controls U+0080..U+009F.
            c if c.is_control() => {}
            c => out.push(c),
        }
    }

    fn escape(&mut self, c: char, out: &mut String) {
        self.state = State::Ground;
        match c {
            '[' => {
                self.csi.clear();
                self.state = State::Csi;
            }
            ']' => {
                self.state = State::String {
                    bel_ends: true,
                    len: 0,
                }
            }
            'P' | 'X' | '^' | '_' => {
                self.state = State::String {
                    bel_ends: false,
                    len: 0,
                }
            }
            '7' | '8' | 'M' | '=' | '>' => {
                out.extend([ESC, c]);
                match c {
                    '=' => self.modes.app_keypad = true,
                    '>' => self.modes.app_keypad = false,
                    _ => {}
                }
            }
            '(' | ')' => self.state = State::Charset(c),
            '\x20'..='\x2f' => self.state = State::EscapeIgnore,
            // Every other escape (RIS `ESC c`, `ESC #8`, a lone ST `ESC \`...) is dropped.
            '\x30'..='\x7e' => {}
            _ => {
                self.state = State::Escape;
                self.interrupt(c, out);
            }
        }
    }

    /// A character inside an OSC/DCS/APC/PM/SOS string: dropped up to the terminator.
    fn string(&mut self, c: char, bel_ends: bool, len: usize) {
        self.state = match c {
            // ESC ends the string; `ESC \` (ST) then ends as a dropped escape.
            ESC => State::Escape,
            BEL if bel_ends => State::Ground,
            CAN | SUB | ST_8BIT => State::Ground,
            _ if len >= MAX_STRING => State::Ground,
            _ => State::String {
                bel_ends,
                len: len + 1,
            },
        };
    }

    /// A character that does not belong to the escape sequence in progress, handled
    /// the way terminals do: ESC starts over, CAN/SUB cancel, the kept C0 controls
    /// take effect without ending the sequence, other controls are ignored, and
    /// anything else ends (and drops) the sequence and is read as text.
    fn interrupt(&mut self, c: char, out: &mut String) {
        match c {
            ESC => {
                self.csi.clear();
                self.state = State::Escape;
            }
            CAN | SUB => {
                self.csi.clear();
                self.state = State::Ground;
            }
            '\r' | '\n' | '\t' | '\x08' => out.push(c),
            c if (c as u32) < 0x20 || c == '\x7f' => {}
            c => {
                self.csi.clear();
                self.state = State::Ground;
                self.ground(c, out);
            }
        }
    }

    /// Whether the collected CSI body with `final_char` is on the allow-list; records
    /// the modes a kept sequence sets.
    fn csi_allowed(&mut self, final_char: char) -> bool {
        if !CSI_FINALS.contains(final_char) {
            return false;
        }
        let body = self.csi.as_str();
        // Intermediates (`CSI ... SP q`, `CSI ! p`) are not needed for display.
        if body.bytes().any(|b| (0x20..=0x2f).contains(&b)) {
            return false;
        }
        let (private, params) = match body.strip_prefix('?') {
            Some(rest) => (true, rest),
            None => (false, body),
        };
        // `<`, `=`, `>` introduce xterm extensions (modifyOtherKeys `CSI > 4;1 m`, ...).
        if params
            .bytes()
            .any(|b| matches!(b, b'<' | b'=' | b'>' | b'?'))
        {
            return false;
        }
        let modes = &mut self.modes;
        match final_char {
            'h' | 'l' => {
                let allowed: &[u16] = if private { &PRIVATE_MODES } else { &ANSI_MODES };
                let Some(numbers) = mode_numbers(params) else {
                    return false;
                };
                if !numbers.iter().all(|n| allowed.contains(n)) {
                    return false;
                }
                let set = final_char == 'h';
                for n in numbers {
                    match (private, n) {
                        (true, 1) => modes.app_cursor_keys = set,
                        (true, 7) => modes.no_autowrap = !set,
                        (true, 25) => modes.cursor_hidden = !set,
                        (true, 47 | 1047 | 1049) => modes.alt_screen = set,
                        (false, 4) => modes.insert = set,
                        _ => {}
                    }
                }
                true
            }
            // `CSI 3 J` erases the operator's scrollback: not kept.
            'J' => !params.split(';').any(|p| p == "3"),
            'K' => true,
            _ if private => false,
            // `CSI Ps;Ps;Ps;Ps;Ps T` starts xterm's highlight mouse tracking.
            'T' => !params.contains(';'),
            'm' => {
                modes.sgr = true;
                true
            }
            'r' => {
                modes.scroll_region = !params.is_empty();
                true
            }
            _ => true,
        }
    }
}

/// `1;25;1049` as numbers; `None` when empty or not numbers.
fn mode_numbers(params: &str) -> Option<Vec<u16>> {
    params
        .split(';')
        .map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(input: &str) -> String {
        Sanitizer::new().feed(input)
    }

    #[test]
    fn text_and_kept_controls_pass() {
        assert_eq!(clean("root@web:~# ls\r\n"), "root@web:~# ls\r\n");
        assert_eq!(clean("a\tb\x08c"), "a\tb\x08c");
        assert_eq!(clean("héllo ☃ 日本"), "héllo ☃ 日本");
    }

    #[test]
    fn other_controls_are_dropped() {
        assert_eq!(clean("a\x07b\x00c\x7fd\x0ee\x0ff"), "abcdef");
        assert_eq!(clean("a\u{85}b\u{9d}c\u{90}d"), "abcd");
    }

    #[test]
    fn display_sequences_are_kept() {
        for seq in [
            "\x1b[31m",
            "\x1b[1;38;5;208m",
            "\x1b[38:2::255:0:0m",
            "\x1b[0m",
            "\x1b[H",
            "\x1b[12;40H",
            "\x1b[2J",
            "\x1b[K",
            "\x1b[?1049h",
            "\x1b[?1049l",
            "\x1b[?25l",
            "\x1b[?1h",
            "\x1b[1;24r",
            "\x1b[3@",
            "\x1b[2P",
            "\x1b[5X",
            "\x1b[10d",
            "\x1b[s",
            "\x1b[u",
            "\x1b[4h",
            "\x1b7",
            "\x1b8",
            "\x1bM",
            "\x1b=",
            "\x1b>",
            "\x1b(0",
            "\x1b(B",
            "\x1b)0",
        ] {
            assert_eq!(clean(seq), seq, "{seq:?}");
        }
    }

    #[test]
    fn osc_52_clipboard_write_is_dropped() {
        assert_eq!(clean("a\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07b"), "ab");
        assert_eq!(clean("a\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x1b\\b"), "ab");
        assert_eq!(clean("a\x1b]52;c;YQ==\u{9c}b"), "ab");
    }

    #[test]
    fn title_changes_are_dropped() {
        assert_eq!(clean("\x1b]0;pwned\x07$ "), "$ ");
        assert_eq!(clean("\x1b]2;pwned\x1b\\$ "), "$ ");
        assert_eq!(clean("\x1b[22;0t\x1b[23;0t$ "), "$ ");
    }

    #[test]
    fn queries_that_make_the_terminal_answer_are_dropped() {
        for query in [
            "\x1b[6n",
            "\x1b[5n",
            "\x1b[?6n",
            "\x1b[c",
            "\x1b[>c",
            "\x1b[=c",
            "\x1b[14t",
            "\x1b[18t",
            "\x1b[21t",
            "\x1b[>0q",
            "\x1b[?1$p",
            "\x1b[?1;1;0S",
            "\x1bP$qm\x1b\\",
            "\x1bP+q544e\x1b\\",
            "\x1bZ",
        ] {
            assert_eq!(clean(&format!("<{query}>")), "<>", "{query:?}");
        }
    }

    #[test]
    fn reporting_and_destructive_sequences_are_dropped() {
        for seq in [
            "\x1b[?1000h",
            "\x1b[?1006h",
            "\x1b[?1004h",
            "\x1b[?2004h",
            "\x1b[?25;1000h",
            "\x1b[?5h",
            "\x1b[20h",
            "\x1b[3J",
            "\x1b[>4;1m",
            "\x1b[2 q",
            "\x1b[!p",
            "\x1bc",
            "\x1b#8",
            "\x1b%G",
            "\x1b(%5",
            "\x1b*0",
            "\x1b_app\x1b\\",
            "\x1b^pm\x1b\\",
            "\x1bXsos\x1b\\",
            "\x1b[1;2;3;4;5T",
        ] {
            assert_eq!(clean(&format!("<{seq}>")), "<>", "{seq:?}");
        }
    }

    #[test]
    fn eight_bit_c1_csi_is_dropped() {
        // U+009B is CSI on terminals that honour C1: only the harmless rest remains.
        assert_eq!(clean("a\u{9b}6nb"), "a6nb");
        assert_eq!(clean("\u{9d}52;c;YQ==\u{9c}"), "52;c;YQ==");
        assert_eq!(clean("\u{90}$q\u{9c}"), "$q");
    }

    #[test]
    fn sequences_split_across_calls() {
        let mut s = Sanitizer::new();
        let out: String = [
            "a\x1b", "]52;c;", "Y3Vy", "bA==\x1b", "\\b\x1b[", "3", "1m", "c\x1b[6", "n", "d",
        ]
        .iter()
        .map(|piece| s.feed(piece))
        .collect();
        assert_eq!(out, "ab\x1b[31mcd");
    }

    #[test]
    fn long_csi_is_dropped_whole() {
        let long = format!("a\x1b[{}mb", "1;".repeat(100));
        assert_eq!(clean(&long), "ab");
        let just_fits = format!("\x1b[{}m", "1".repeat(MAX_CSI));
        assert_eq!(clean(&just_fits), just_fits);
        let mut s = Sanitizer::new();
        let mut out = s.feed("a\x1b[");
        for _ in 0..10_000 {
            out.push_str(&s.feed("1;"));
        }
        out.push_str(&s.feed("mb"));
        assert_eq!(out, "ab");
    }

    #[test]
    fn unterminated_string_gives_up_after_the_bound() {
        let mut s = Sanitizer::new();
        let mut out = s.feed("a\x1b]52;c;");
        out.push_str(&s.feed(&"x".repeat(MAX_STRING + 10)));
        out.push_str(&s.feed("tail"));
        // The first MAX_STRING characters of the body ("52;c;" and the x's) and the one
        // that hits the bound are dropped; the other 14 x's come out as text.
        assert_eq!(out, format!("a{}tail", "x".repeat(14)));
    }

    #[test]
    fn interruptions_inside_sequences() {
        // CAN cancels, ESC restarts, kept controls take effect in place.
        assert_eq!(clean("a\x1b[31\x18mb"), "amb");
        assert_eq!(clean("a\x1b[31\x1b[32mb"), "a\x1b[32mb");
        assert_eq!(clean("\x1b[3\r1m"), "\r\x1b[31m");
        assert_eq!(clean("\x1b[3\x071m"), "\x1b[31m");
        assert_eq!(clean("\x1b[3é"), "é");
        assert_eq!(clean("\x1b\u{9b}6n"), "6n");
        assert_eq!(clean("\x1b]0;t\x1b]52;c;YQ==\x07x"), "x");
    }

    #[test]
    fn finish_restores_what_was_left_set() {
        let mut s = Sanitizer::new();
        assert_eq!(s.finish(), "");
        s.feed("\x1b[?1049h\x1b[?25l\x1b[31m\x1b=\x1b(0\x1b[2;20r\x1b[?1h\x1b[?7l\x1b[4h\x1b[6");
        assert_eq!(
            s.finish(),
            "\x1b[?1049l\x1b7\x1b[r\x1b8\x1b[4l\x1b[?1l\x1b[?7h\x1b[?25h\x1b>\x1b(B\x1b[0m"
        );
        // The unfinished `ESC[6` is gone, and so is the state.
        assert_eq!(s.feed("n"), "n");
        assert_eq!(s.finish(), "");
        // What the session undid itself needs no undoing.
        s.feed("\x1b[?1049h\x1b[?25l\x1b[?1049l\x1b[?25h\x1b=\x1b>\x1b(0\x1b(B");
        assert_eq!(s.finish(), "");
    }
}
