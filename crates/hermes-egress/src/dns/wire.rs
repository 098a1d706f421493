//! DNS messages on the wire (RFC 1035), just what a stub resolver's queries and an
//! upstream's answers need. Every byte comes from a box or the network: parsing is
//! strict, bounded and never panics; what does not fit is an error, not a guess.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Bytes of a DNS header.
pub const HEADER_LEN: usize = 12;
/// Bytes of a name on the wire at most (RFC 1035 2.3.4).
const MAX_NAME_LEN: usize = 255;
/// Compression pointers followed in one name at most.
const MAX_POINTERS: usize = 16;
/// Records read from an upstream answer at most.
const MAX_RECORDS: usize = 64;

/// Record types Hermes answers itself.
pub const TYPE_A: u16 = 1;
/// An IPv6 address record.
pub const TYPE_AAAA: u16 = 28;
/// Class IN.
pub const CLASS_IN: u16 = 1;

const FLAG_QR: u16 = 0x8000;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const OPCODE_MASK: u16 = 0x7800;

/// Response codes Hermes uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// No error.
    NoError = 0,
    /// The query could not be read.
    FormErr = 1,
    /// The server failed (upstream unreachable).
    ServFail = 2,
    /// The name does not exist.
    NxDomain = 3,
    /// The kind of query is not implemented.
    NotImp = 4,
    /// The server will not answer this.
    Refused = 5,
}

impl Rcode {
    /// The code in a header's low four bits.
    pub fn from_code(code: u8) -> Option<Rcode> {
        Some(match code {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            _ => return None,
        })
    }

    /// The mnemonic, as dig prints it.
    pub fn name(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
        }
    }
}

/// The mnemonic of a record type, or `TYPEnnn` (RFC 3597) for others.
pub fn type_name(qtype: u16) -> String {
    let known = match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        251 => "IXFR",
        252 => "AXFR",
        255 => "ANY",
        257 => "CAA",
        _ => return format!("TYPE{qtype}"),
    };
    known.to_owned()
}

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header: not even an id to answer.
    #[error("shorter than a DNS header")]
    NoHeader,
    /// The message ends inside a field.
    #[error("message truncated")]
    Truncated,
    /// A label with the reserved 0x40/0x80 length bits.
    #[error("bad label type")]
    BadLabel,
    /// A compression pointer forward, to itself, or too many of them.
    #[error("bad compression pointer")]
    BadPointer,
    /// A name longer than 255 bytes.
    #[error("name too long")]
    NameTooLong,
    /// A response where a query was expected.
    #[error("a response, not a query")]
    Response,
    /// Counts a query cannot have (not exactly one question, or answers).
    #[error("unexpected section counts")]
    BadCounts,
}

/// A domain name as its labels, bytes as sent (case kept for echoing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    labels: Vec<Vec<u8>>,
}

impl Name {
    /// A name from its dotted text (a configuration key); None when a label is empty
    /// or too long. A trailing dot is allowed.
    pub fn from_text(text: &str) -> Option<Name> {
        let text = text.strip_suffix('.').unwrap_or(text);
        if text.is_empty() {
            return Some(Name { labels: Vec::new() });
        }
        let labels: Vec<Vec<u8>> = text.split('.').map(|l| l.as_bytes().to_vec()).collect();
        let name = Name { labels };
        let fits = name.labels.iter().all(|l| !l.is_empty() && l.len() <= 63)
            && name.wire_len() <= MAX_NAME_LEN;
        fits.then_some(name)
    }

    /// The lookup key: lower-case ASCII, labels joined by dots, no trailing dot.
    /// Labels holding a dot or non-ASCII bytes keep them, escaped, so two different
    /// names never share a key.
    pub fn key(&self) -> String {
        self.to_text().to_ascii_lowercase()
    }

    /// The name as dig prints it: printable ASCII as is, `.` and `\` inside a label
    /// and every other byte as `\DDD`. Safe for any log (no control characters).
    pub fn to_text(&self) -> String {
        if self.labels.is_empty() {
            return ".".to_owned();
        }
        let mut out = String::new();
        for (i, label) in self.labels.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            for &b in label {
                match b {
                    b'.' | b'\\' => {
                        out.push('\\');
                        out.push(b as char);
                    }
                    0x21..=0x7e => out.push(b as char),
                    _ => {
                        let _ = write!(out, "\\{b:03}");
                    }
                }
            }
        }
        out
    }

    /// Bytes of the name on the wire, uncompressed.
    fn wire_len(&self) -> usize {
        self.labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1
    }

    fn write(&self, out: &mut Vec<u8>) {
        for label in &self.labels {
            // Labels are at most 63 bytes (checked when read or built).
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        out.push(0);
    }
}

/// The one question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name asked about.
    pub name: Name,
    /// Record type.
    pub qtype: u16,
    /// Class (IN for anything real).
    pub qclass: u16,
}

/// A query as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not answered at all: too short to carry an id, or a response (answering
    /// responses could make two servers talk forever).
    Ignore(WireError),
    /// Answered with this code and no question (unreadable, or not a standard query).
    Reject { id: u16, flags: u16, rcode: Rcode },
    /// A standard query.
    Query(Query),
}

/// A standard query with its one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The client's id, echoed.
    pub id: u16,
    /// Whether the client asked for recursion (echoed).
    pub recursion_desired: bool,
    /// The question.
    pub question: Question,
}

/// Reads a query from a box.
pub fn parse_query(message: &[u8]) -> Parsed {
    let Some(header) = message.get(..HEADER_LEN) else {
        return Parsed::Ignore(WireError::NoHeader);
    };
    let id = u16::from_be_bytes([header[0], header[1]]);
    let flags = u16::from_be_bytes([header[2], header[3]]);
    if flags & FLAG_QR != 0 {
        return Parsed::Ignore(WireError::Response);
    }
    if flags & OPCODE_MASK != 0 {
        return Parsed::Reject {
            id,
            flags,
            rcode: Rcode::NotImp,
        };
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let formerr = Parsed::Reject {
        id,
        flags,
        rcode: Rcode::FormErr,
    };
    // One question, no answers or authority; an OPT record (EDNS) at most.
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return formerr;
    }
    let mut reader = Reader::new(message, HEADER_LEN);
    let question = match reader.question() {
        Ok(question) => question,
        Err(_) => return formerr,
    };
    Parsed::Query(Query {
        id,
        recursion_desired: flags & FLAG_RD != 0,
        question,
    })
}

/// A response to `query` that Hermes makes itself: the question echoed, `answers`
/// (addresses of the question's name) with `ttl`.
pub fn build_answer(query: &Query, rcode: Rcode, answers: &[IpAddr], ttl: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + answers.len() * 28);
    write_header(
        &mut out,
        query.id,
        query.recursion_desired,
        rcode,
        1,
        answers.len(),
    );
    let question = &query.question;
    question.name.write(&mut out);
    out.extend_from_slice(&question.qtype.to_be_bytes());
    out.extend_from_slice(&question.qclass.to_be_bytes());
    for address in answers {
        // A pointer to the question's name, right after the header.
        out.extend_from_slice(&[0xc0, HEADER_LEN as u8]);
        let (rtype, data): (u16, Vec<u8>) = match address {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// A header-only answer (no question) for a query that could not be read.
pub fn build_reject(id: u16, flags: u16, rcode: Rcode) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    write_header(&mut out, id, flags & FLAG_RD != 0, rcode, 0, 0);
    // Keep the opcode the client used, as servers do for NOTIMP.
    out[2] |= ((flags & OPCODE_MASK) >> 8) as u8;
    out
}

/// The query Hermes sends upstream for `question`: its own `id`, recursion desired.
pub fn build_query(id: u16, question: &Question) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + question.name.wire_len() + 4);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&FLAG_RD.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    question.name.write(&mut out);
    out.extend_from_slice(&question.qtype.to_be_bytes());
    out.extend_from_slice(&question.qclass.to_be_bytes());
    out
}

fn write_header(
    out: &mut Vec<u8>,
    id: u16,
    recursion_desired: bool,
    rcode: Rcode,
    questions: u16,
    answers: usize,
) {
    let mut flags = FLAG_QR | FLAG_RA | rcode as u16;
    if recursion_desired {
        flags |= FLAG_RD;
    }
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&questions.to_be_bytes());
    // At most a handful of answers (one static address).
    out.extend_from_slice(&(answers.min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
}

/// What an upstream answer says, read far enough to log and cache it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The id it carries.
    pub id: u16,
    /// Its response code (None: one Hermes does not name, e.g. from EDNS).
    pub rcode: Option<Rcode>,
    /// Its raw rcode bits.
    pub rcode_bits: u8,
    /// Whether it was truncated (TC).
    pub truncated: bool,
    /// Its question.
    pub question: Question,
    /// A and AAAA addresses in the answer section.
    pub addresses: Vec<IpAddr>,
    /// Offsets of every record's TTL (answer and authority sections), to age them.
    pub ttl_offsets: Vec<usize>,
    /// The smallest TTL of those records, if any.
    pub min_ttl: Option<u32>,
}

/// Reads an upstream's answer.
pub fn parse_answer(message: &[u8]) -> Result<Answer, WireError> {
    let header = message.get(..HEADER_LEN).ok_or(WireError::NoHeader)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]) as usize;
    if flags & FLAG_QR == 0 || flags & OPCODE_MASK != 0 || count(4) != 1 {
        return Err(WireError::BadCounts);
    }
    let (answers, authority) = (count(6), count(8));
    if answers + authority > MAX_RECORDS {
        return Err(WireError::BadCounts);
    }
    let mut reader = Reader::new(message, HEADER_LEN);
    let question = reader.question()?;
    let mut addresses = Vec::new();
    let mut ttl_offsets = Vec::new();
    let mut min_ttl: Option<u32> = None;
    for index in 0..answers + authority {
        reader.name()?;
        let rtype = reader.u16()?;
        let _class = reader.u16()?;
        ttl_offsets.push(reader.position);
        let ttl = reader.u32()?;
        let length = reader.u16()? as usize;
        let data = reader.take(length)?;
        min_ttl = Some(min_ttl.map_or(ttl, |m| m.min(ttl)));
        if index < answers {
            match (rtype, data.len()) {
                (TYPE_A, 4) => addresses.push(IpAddr::from([data[0], data[1], data[2], data[3]])),
                (TYPE_AAAA, 16) => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(data);
                    addresses.push(IpAddr::from(octets));
                }
                _ => {}
            }
        }
    }
    let rcode_bits = (flags & 0x000f) as u8;
    Ok(Answer {
        id,
        rcode: Rcode::from_code(rcode_bits),
        rcode_bits,
        truncated: flags & 0x0200 != 0,
        question,
        addresses,
        ttl_offsets,
        min_ttl,
    })
}

/// Turns an upstream answer into the box's: its id, its recursion bit, its question
/// name as the box wrote it (same name, maybe other case: the 0x20 trick).
pub fn readdress(message: &mut [u8], query: &Query) {
    if message.len() < HEADER_LEN {
        return;
    }
    message[..2].copy_from_slice(&query.id.to_be_bytes());
    if query.recursion_desired {
        message[2] |= (FLAG_RD >> 8) as u8;
    } else {
        message[2] &= !((FLAG_RD >> 8) as u8);
    }
    let mut name = Vec::with_capacity(query.question.name.wire_len());
    query.question.name.write(&mut name);
    if let Some(slot) = message.get_mut(HEADER_LEN..HEADER_LEN + name.len())
        && slot.eq_ignore_ascii_case(&name)
    {
        slot.copy_from_slice(&name);
    }
}

/// Reads fields from a message, every read checked.
struct Reader<'a> {
    message: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn new(message: &'a [u8], position: usize) -> Self {
        Reader { message, position }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.position.checked_add(n).ok_or(WireError::Truncated)?;
        let bytes = self
            .message
            .get(self.position..end)
            .ok_or(WireError::Truncated)?;
        self.position = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn question(&mut self) -> Result<Question, WireError> {
        let name = self.name()?;
        let qtype = self.u16()?;
        let qclass = self.u16()?;
        Ok(Question {
            name,
            qtype,
            qclass,
        })
    }

    /// A name, following compression pointers only backwards and at most
    /// [`MAX_POINTERS`] times; the reader ends after the name's first part.
    fn name(&mut self) -> Result<Name, WireError> {
        let mut labels = Vec::new();
        let mut wire_len = 1;
        let mut at = self.position;
        let mut resume: Option<usize> = None;
        let mut pointers = 0;
        loop {
            let length = *self.message.get(at).ok_or(WireError::Truncated)?;
            match length & 0xc0 {
                0x00 if length == 0 => {
                    at += 1;
                    break;
                }
                0x00 => {
                    let start = at + 1;
                    let end = start + length as usize;
                    let label = self.message.get(start..end).ok_or(WireError::Truncated)?;
                    wire_len += label.len() + 1;
                    if wire_len > MAX_NAME_LEN {
                        return Err(WireError::NameTooLong);
                    }
                    labels.push(label.to_vec());
                    at = end;
                }
                0xc0 => {
                    let low = *self.message.get(at + 1).ok_or(WireError::Truncated)?;
                    let target = (usize::from(length & 0x3f) << 8) | usize::from(low);
                    pointers += 1;
                    // Strictly backwards: no loop can form.
                    if target >= at || pointers > MAX_POINTERS {
                        return Err(WireError::BadPointer);
                    }
                    resume.get_or_insert(at + 2);
                    at = target;
                }
                _ => return Err(WireError::BadLabel),
            }
        }
        self.position = resume.unwrap_or(at);
        Ok(Name { labels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_bytes(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let question = Question {
            name: Name::from_text(name).expect("name"),
            qtype,
            qclass: CLASS_IN,
        };
        build_query(id, &question)
    }

    #[test]
    fn a_query_round_trips() {
        let bytes = query_bytes(0x1234, "Example.COM.", TYPE_A);
        let Parsed::Query(query) = parse_query(&bytes) else {
            panic!("not a query: {:?}", parse_query(&bytes));
        };
        assert_eq!(query.id, 0x1234);
        assert!(query.recursion_desired);
        assert_eq!(query.question.name.to_text(), "Example.COM");
        assert_eq!(query.question.name.key(), "example.com");
        assert_eq!(query.question.qtype, TYPE_A);
    }

    #[test]
    fn an_answer_echoes_id_question_and_flags() {
        let bytes = query_bytes(7, "a.test", TYPE_A);
        let Parsed::Query(query) = parse_query(&bytes) else {
            panic!()
        };
        let address: IpAddr = "192.0.2.1".parse().expect("ip");
        let answer = build_answer(&query, Rcode::NoError, &[address], 300);
        let read = parse_answer(&answer).expect("answer");
        assert_eq!(read.id, 7);
        assert_eq!(read.rcode, Some(Rcode::NoError));
        assert_eq!(read.question, query.question);
        assert_eq!(read.addresses, vec![address]);
        assert_eq!(read.min_ttl, Some(300));
        assert_eq!(answer[2] & 0x01, 0x01, "RD echoed");
        assert_eq!(answer[3] & 0x80, 0x80, "RA set");
    }

    #[test]
    fn hostile_queries_are_refused_or_ignored() {
        let good = query_bytes(9, "x.test", TYPE_A);
        // Too short, or a response: ignored.
        assert!(matches!(parse_query(&good[..11]), Parsed::Ignore(_)));
        let mut response = good.clone();
        response[2] |= 0x80;
        assert!(matches!(parse_query(&response), Parsed::Ignore(_)));
        // Another opcode (NOTIFY): not implemented.
        let mut notify = good.clone();
        notify[2] |= 4 << 3;
        assert!(matches!(
            parse_query(&notify),
            Parsed::Reject {
                rcode: Rcode::NotImp,
                ..
            }
        ));
        let formerr = |bytes: &[u8]| {
            matches!(
                parse_query(bytes),
                Parsed::Reject {
                    rcode: Rcode::FormErr,
                    id: 9,
                    ..
                }
            )
        };
        // Truncated anywhere in the question.
        for cut in HEADER_LEN..good.len() {
            assert!(formerr(&good[..cut]), "cut at {cut}");
        }
        // Huge counts.
        let mut counts = good.clone();
        counts[4..6].copy_from_slice(&[0xff, 0xff]);
        assert!(formerr(&counts));
        // A pointer to itself, and one forward.
        let mut looped = good[..HEADER_LEN].to_vec();
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(formerr(&looped));
        let mut forward = good[..HEADER_LEN].to_vec();
        forward.extend_from_slice(&[0xc0, 14, 0, 0, 1, 0, 1]);
        assert!(formerr(&forward));
        // Reserved label bits.
        let mut reserved = good[..HEADER_LEN].to_vec();
        reserved.extend_from_slice(&[0x41, b'a', 0, 0, 1, 0, 1]);
        assert!(formerr(&reserved));
        // A name over 255 bytes.
        let mut long = good[..HEADER_LEN].to_vec();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(formerr(&long));
    }

    #[test]
    fn names_print_escaped() {
        let mut bytes = query_bytes(1, "x.test", TYPE_A)[..HEADER_LEN].to_vec();
        bytes.extend_from_slice(&[4, b'a', b'.', 0x1b, b'\n', 1, b'\\', 0, 0, 1, 0, 1]);
        let Parsed::Query(query) = parse_query(&bytes) else {
            panic!()
        };
        assert_eq!(query.question.name.to_text(), "a\\.\\027\\010.\\\\");
    }

    #[test]
    fn random_bytes_never_panic() {
        // A fixed-seed generator: the same bytes every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let template = query_bytes(3, "www.example.test", TYPE_AAAA);
        let mut parsed = 0;
        for round in 0..20_000 {
            let len = (next() % 80) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                // Mutations of a valid query reach deeper than pure noise.
                bytes = template.clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = next() as u8;
                }
                bytes.truncate((next() as usize) % (template.len() + 1));
            }
            if matches!(parse_query(&bytes), Parsed::Query(_)) {
                parsed += 1;
            }
            let _ = parse_answer(&bytes);
            let mut copy = bytes.clone();
            if let Parsed::Query(query) = parse_query(&template) {
                readdress(&mut copy, &query);
            }
        }
        assert!(
            parsed > 100,
            "the mutations never produced a query: {parsed}"
        );
    }
}
