//! The FUSE protocol, as much of it as a read-only tree of two files needs: a
//! directory `proc` holding `stat` and `uptime`, laid out as LXCFS's mount is, so a
//! box's bind mounts of them look like its other LXCFS files. Requests come from the
//! kernel on behalf of any box; nothing in them is trusted beyond its framing.

use std::collections::HashMap;

use crate::cgroup::Hierarchies;
use crate::files::{self, File};

const ROOT: u64 = 1;
const PROC: u64 = 2;
const STAT: u64 = 3;
const UPTIME: u64 = 4;

const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const OPEN: u32 = 14;
const READ: u32 = 15;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const INTERRUPT: u32 = 36;
const DESTROY: u32 = 38;
const BATCH_FORGET: u32 = 42;

const IN_HEADER: usize = 40;
const OUT_HEADER: usize = 16;
/// FOPEN_DIRECT_IO: every read comes here, as with LXCFS (the text changes).
const DIRECT_IO: u32 = 1;
/// How long the kernel may keep names and attributes (LXCFS's 0.5 s).
const VALID_NANOS: u32 = 500_000_000;
/// Open files one box may hold, and all boxes together: a box opening in a loop
/// cannot take the others' /proc/stat away.
pub const PER_OWNER: usize = 64;
pub const TOTAL: usize = 4096;

/// One request, its header read.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub opcode: u32,
    pub unique: u64,
    pub node: u64,
    pub pid: u32,
    pub body: &'a [u8],
}

/// The request in `buf`, or None when it is not framed as one.
pub fn parse(buf: &[u8]) -> Option<Request<'_>> {
    let len = usize::try_from(u32_at(buf, 0)?).ok()?;
    if len < IN_HEADER || len > buf.len() {
        return None;
    }
    Some(Request {
        opcode: u32_at(buf, 4)?,
        unique: u64_at(buf, 8)?,
        node: u64_at(buf, 16)?,
        pid: u32_at(buf, 32)?,
        body: &buf[IN_HEADER..len],
    })
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// What a request is answered with.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nothing (FORGET, INTERRUPT).
    None,
    Data(Vec<u8>),
    Error(i32),
    /// The kernel is done with this mount.
    Stop,
}

/// The reply to `unique`, framed.
pub fn frame(unique: u64, answer: &Answer) -> Option<Vec<u8>> {
    let (error, data): (i32, &[u8]) = match answer {
        Answer::None => return None,
        Answer::Stop => (0, &[]),
        Answer::Data(data) => (0, data),
        Answer::Error(errno) => (-errno, &[]),
    };
    let len = u32::try_from(OUT_HEADER + data.len()).ok()?;
    let mut out = Vec::with_capacity(OUT_HEADER + data.len());
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&error.to_ne_bytes());
    out.extend_from_slice(&unique.to_ne_bytes());
    out.extend_from_slice(data);
    Some(out)
}

struct Handle {
    text: Vec<u8>,
    owner: String,
}

/// The open files and what they were opened with.
#[derive(Default)]
pub struct Server {
    hierarchies: Hierarchies,
    handles: HashMap<u64, Handle>,
    per_owner: HashMap<String, usize>,
    next: u64,
}

impl Server {
    pub fn new(hierarchies: Hierarchies) -> Self {
        Server {
            hierarchies,
            ..Server::default()
        }
    }

    /// Files open now.
    #[cfg(test)]
    pub fn open_files(&self) -> usize {
        self.handles.len()
    }

    pub fn answer(&mut self, request: &Request<'_>) -> Answer {
        match request.opcode {
            INIT => init(request.body),
            LOOKUP => lookup(request.node, request.body),
            GETATTR => attr_of(request.node).map_or(Answer::Error(libc::ENOENT), |attr| {
                let mut out = Vec::with_capacity(104);
                out.extend_from_slice(&0u64.to_ne_bytes());
                out.extend_from_slice(&VALID_NANOS.to_ne_bytes());
                out.extend_from_slice(&0u32.to_ne_bytes());
                out.extend_from_slice(&attr);
                Answer::Data(out)
            }),
            OPEN => self.open(request),
            READ => self.read(request.body),
            RELEASE => {
                if let Some(fh) = u64_at(request.body, 0) {
                    self.release(fh);
                }
                Answer::Data(Vec::new())
            }
            FLUSH | RELEASEDIR => Answer::Data(Vec::new()),
            OPENDIR => match request.node {
                ROOT | PROC => Answer::Data(open_out(0, 0)),
                STAT | UPTIME => Answer::Error(libc::ENOTDIR),
                _ => Answer::Error(libc::ENOENT),
            },
            READDIR => readdir(request.node, request.body),
            STATFS => Answer::Data(statfs()),
            FORGET | BATCH_FORGET | INTERRUPT => Answer::None,
            DESTROY => Answer::Stop,
            _ => Answer::Error(libc::ENOSYS),
        }
    }

    fn open(&mut self, request: &Request<'_>) -> Answer {
        let file = match request.node {
            STAT => File::Stat,
            UPTIME => File::Uptime,
            ROOT | PROC => return Answer::Error(libc::EISDIR),
            _ => return Answer::Error(libc::ENOENT),
        };
        let Some(flags) = u32_at(request.body, 0) else {
            return Answer::Error(libc::EINVAL);
        };
        let write_flags = libc::O_ACCMODE | libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT;
        if flags & (write_flags as u32) != 0 {
            return Answer::Error(libc::EACCES);
        }
        if self.handles.len() >= TOTAL {
            return Answer::Error(libc::ENFILE);
        }
        let served = match files::content(&self.hierarchies, file, request.pid) {
            Ok(served) => served,
            Err(errno) => return Answer::Error(errno),
        };
        let held = self.per_owner.entry(served.owner.clone()).or_insert(0);
        if *held >= PER_OWNER {
            return Answer::Error(libc::EMFILE);
        }
        *held += 1;
        self.next = self.next.wrapping_add(1);
        let fh = self.next;
        self.handles.insert(
            fh,
            Handle {
                text: served.text.into_bytes(),
                owner: served.owner,
            },
        );
        Answer::Data(open_out(fh, DIRECT_IO))
    }

    fn read(&self, body: &[u8]) -> Answer {
        let (Some(fh), Some(offset), Some(size)) =
            (u64_at(body, 0), u64_at(body, 8), u32_at(body, 16))
        else {
            return Answer::Error(libc::EINVAL);
        };
        let Some(handle) = self.handles.get(&fh) else {
            return Answer::Error(libc::EBADF);
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(handle.text.len());
        let end = start
            .saturating_add(usize::try_from(size).unwrap_or(usize::MAX))
            .min(handle.text.len());
        Answer::Data(handle.text[start..end].to_vec())
    }

    fn release(&mut self, fh: u64) {
        if let Some(handle) = self.handles.remove(&fh)
            && let Some(held) = self.per_owner.get_mut(&handle.owner)
        {
            *held -= 1;
            if *held == 0 {
                self.per_owner.remove(&handle.owner);
            }
        }
    }
}

fn init(body: &[u8]) -> Answer {
    let (Some(major), Some(max_readahead)) = (u32_at(body, 0), u32_at(body, 8)) else {
        return Answer::Error(libc::EINVAL);
    };
    if major != 7 {
        return Answer::Error(libc::EPROTO);
    }
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&7u32.to_ne_bytes());
    out.extend_from_slice(&31u32.to_ne_bytes());
    out.extend_from_slice(&max_readahead.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // flags: none needed
    out.extend_from_slice(&16u16.to_ne_bytes()); // max_background
    out.extend_from_slice(&12u16.to_ne_bytes()); // congestion_threshold
    out.extend_from_slice(&4096u32.to_ne_bytes()); // max_write
    out.extend_from_slice(&1u32.to_ne_bytes()); // time_gran
    out.resize(64, 0);
    Answer::Data(out)
}

fn child(parent: u64, name: &[u8]) -> Option<u64> {
    match (parent, name) {
        (ROOT, b"proc") => Some(PROC),
        (PROC, b"stat") => Some(STAT),
        (PROC, b"uptime") => Some(UPTIME),
        _ => None,
    }
}

fn lookup(parent: u64, body: &[u8]) -> Answer {
    let name = body.split(|b| *b == 0).next().unwrap_or(&[]);
    let Some(node) = child(parent, name) else {
        return Answer::Error(libc::ENOENT);
    };
    let Some(attr) = attr_of(node) else {
        return Answer::Error(libc::ENOENT);
    };
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&node.to_ne_bytes());
    out.extend_from_slice(&0u64.to_ne_bytes()); // generation
    out.extend_from_slice(&0u64.to_ne_bytes()); // entry_valid
    out.extend_from_slice(&0u64.to_ne_bytes()); // attr_valid
    out.extend_from_slice(&VALID_NANOS.to_ne_bytes());
    out.extend_from_slice(&VALID_NANOS.to_ne_bytes());
    out.extend_from_slice(&attr);
    Answer::Data(out)
}

/// fuse_attr: directories 0555, files 0444 of size 0 as the kernel's /proc files,
/// owned by root, times now (as LXCFS's).
fn attr_of(node: u64) -> Option<[u8; 88]> {
    let (mode, nlink) = match node {
        ROOT | PROC => (libc::S_IFDIR | 0o555, 2u32),
        STAT | UPTIME => (libc::S_IFREG | 0o444, 1u32),
        _ => return None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut attr = [0u8; 88];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        attr[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&node.to_ne_bytes()); // ino
    put(&0u64.to_ne_bytes()); // size
    put(&0u64.to_ne_bytes()); // blocks
    for _ in 0..3 {
        put(&now.as_secs().to_ne_bytes());
    }
    for _ in 0..3 {
        put(&now.subsec_nanos().to_ne_bytes());
    }
    put(&mode.to_ne_bytes());
    put(&nlink.to_ne_bytes());
    // uid, gid, rdev, blksize, flags: zero.
    Some(attr)
}

fn open_out(fh: u64, flags: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&fh.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out
}

fn readdir(node: u64, body: &[u8]) -> Answer {
    let (Some(offset), Some(size)) = (u64_at(body, 8), u32_at(body, 16)) else {
        return Answer::Error(libc::EINVAL);
    };
    let dir = u32::from(libc::DT_DIR);
    let reg = u32::from(libc::DT_REG);
    let entries: &[(u64, &str, u32)] = match node {
        ROOT => &[(ROOT, ".", dir), (ROOT, "..", dir), (PROC, "proc", dir)],
        PROC => &[
            (PROC, ".", dir),
            (ROOT, "..", dir),
            (STAT, "stat", reg),
            (UPTIME, "uptime", reg),
        ],
        _ => return Answer::Error(libc::ENOTDIR),
    };
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    for (index, (ino, name, kind)) in entries
        .iter()
        .enumerate()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
    {
        let mut entry = Vec::with_capacity(32);
        entry.extend_from_slice(&ino.to_ne_bytes());
        entry.extend_from_slice(&(index as u64 + 1).to_ne_bytes());
        entry.extend_from_slice(&(name.len() as u32).to_ne_bytes());
        entry.extend_from_slice(&kind.to_ne_bytes());
        entry.extend_from_slice(name.as_bytes());
        entry.resize(entry.len().div_ceil(8) * 8, 0);
        if out.len() + entry.len() > size {
            break;
        }
        out.extend_from_slice(&entry);
    }
    Answer::Data(out)
}

/// As libfuse answers for a file system that says nothing of its size.
fn statfs() -> Vec<u8> {
    let mut out = vec![0u8; 80];
    out[40..44].copy_from_slice(&512u32.to_ne_bytes()); // bsize
    out[44..48].copy_from_slice(&255u32.to_ne_bytes()); // namelen
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opcode: u32, node: u64, body: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        buf.extend_from_slice(&((IN_HEADER + body.len()) as u32).to_ne_bytes());
        buf.extend_from_slice(&opcode.to_ne_bytes());
        buf.extend_from_slice(&7u64.to_ne_bytes());
        buf.extend_from_slice(&node.to_ne_bytes());
        buf.extend_from_slice(&[0; 8]); // uid, gid
        buf.extend_from_slice(&std::process::id().to_ne_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(body);
        buf
    }

    fn ask(server: &mut Server, opcode: u32, node: u64, body: &[u8]) -> Answer {
        let buf = request(opcode, node, body);
        server.answer(&parse(&buf).unwrap())
    }

    fn data(answer: Answer) -> Vec<u8> {
        match answer {
            Answer::Data(data) => data,
            other => panic!("expected data, got {other:?}"),
        }
    }

    fn open(server: &mut Server, node: u64, flags: i32) -> Answer {
        let mut body = (flags as u32).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; 4]);
        ask(server, OPEN, node, &body)
    }

    fn read(server: &mut Server, fh: u64, offset: u64, size: u32) -> Vec<u8> {
        let mut body = fh.to_ne_bytes().to_vec();
        body.extend_from_slice(&offset.to_ne_bytes());
        body.extend_from_slice(&size.to_ne_bytes());
        body.extend_from_slice(&[0; 20]);
        data(ask(server, READ, 0, &body))
    }

    #[test]
    fn requests_that_are_not_framed_are_refused_by_the_parser() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0; 39]), None);
        let mut short = request(GETATTR, ROOT, &[]);
        short[0] = 10; // a length below the header's
        assert_eq!(parse(&short), None);
        let mut long = request(GETATTR, ROOT, &[]);
        long[0] = 200; // a length past what was read
        assert_eq!(parse(&long), None);
        let good = request(LOOKUP, ROOT, b"proc\0");
        let parsed = parse(&good).unwrap();
        assert_eq!(
            (parsed.opcode, parsed.node, parsed.body),
            (LOOKUP, ROOT, &b"proc\0"[..])
        );
    }

    #[test]
    fn the_tree_is_proc_with_stat_and_uptime_and_nothing_else() {
        let mut server = Server::default();
        let entry = data(ask(&mut server, LOOKUP, ROOT, b"proc\0"));
        assert_eq!(u64_at(&entry, 0), Some(PROC));
        let entry = data(ask(&mut server, LOOKUP, PROC, b"uptime\0"));
        assert_eq!(u64_at(&entry, 0), Some(UPTIME));
        // mode at 40 + 60 in fuse_entry_out
        assert_eq!(u32_at(&entry, 100), Some(libc::S_IFREG | 0o444));
        for (parent, name) in [
            (ROOT, &b"stat\0"[..]),
            (PROC, b"../etc\0"),
            (PROC, b"meminfo\0"),
            (99, b"x\0"),
        ] {
            assert_eq!(
                ask(&mut server, LOOKUP, parent, name),
                Answer::Error(libc::ENOENT)
            );
        }
        assert_eq!(
            ask(&mut server, GETATTR, 99, &[0; 16]),
            Answer::Error(libc::ENOENT)
        );
        assert_eq!(
            ask(&mut server, 4 /* SETATTR */, STAT, &[]),
            Answer::Error(libc::ENOSYS)
        );
        assert_eq!(ask(&mut server, FORGET, STAT, &[0; 8]), Answer::None);
        let mut body = [0u8; 40];
        body[16..20].copy_from_slice(&4096u32.to_ne_bytes());
        let listing = data(ask(&mut server, READDIR, PROC, &body));
        let text = String::from_utf8_lossy(&listing);
        assert!(text.contains("stat") && text.contains("uptime"), "{text}");
        // From the third entry on: no "." or "..".
        body[8..16].copy_from_slice(&2u64.to_ne_bytes());
        let rest = data(ask(&mut server, READDIR, PROC, &body));
        assert_eq!(u64_at(&rest, 0), Some(STAT));
        // Room for none.
        body[16..20].copy_from_slice(&8u32.to_ne_bytes());
        assert!(data(ask(&mut server, READDIR, PROC, &body)).is_empty());
    }

    #[test]
    fn files_open_only_for_reading_and_read_from_any_offset() {
        let mut server = Server::new(Hierarchies::discover());
        for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_TRUNC, libc::O_APPEND] {
            assert_eq!(open(&mut server, STAT, flags), Answer::Error(libc::EACCES));
        }
        assert_eq!(open(&mut server, PROC, 0), Answer::Error(libc::EISDIR));
        let out = data(open(&mut server, STAT, libc::O_RDONLY));
        assert_eq!(u32_at(&out, 8), Some(DIRECT_IO));
        let fh = u64_at(&out, 0).unwrap();
        let whole = read(&mut server, fh, 0, 1 << 20);
        assert!(String::from_utf8_lossy(&whole).contains("btime"));
        let tail = read(&mut server, fh, 5, 1 << 20);
        assert_eq!(tail, whole[5..]);
        assert!(read(&mut server, fh, u64::MAX, u32::MAX).is_empty());
        assert_eq!(read(&mut server, fh, 0, 3), whole[..3]);
        data(ask(&mut server, RELEASE, STAT, &fh.to_ne_bytes()));
        assert_eq!(server.open_files(), 0);
        let mut body = fh.to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; 32]);
        assert_eq!(
            ask(&mut server, READ, STAT, &body),
            Answer::Error(libc::EBADF)
        );
    }

    #[test]
    fn one_owner_cannot_hold_more_than_its_share_of_open_files() {
        let mut server = Server::new(Hierarchies::discover());
        for _ in 0..PER_OWNER {
            data(open(&mut server, UPTIME, libc::O_RDONLY));
        }
        assert_eq!(
            open(&mut server, UPTIME, libc::O_RDONLY),
            Answer::Error(libc::EMFILE)
        );
        // Releasing one makes room for one.
        data(ask(&mut server, RELEASE, UPTIME, &1u64.to_ne_bytes()));
        data(open(&mut server, UPTIME, libc::O_RDONLY));
        assert_eq!(server.open_files(), PER_OWNER);
    }

    #[test]
    fn init_speaks_version_7_and_refuses_another() {
        let mut server = Server::default();
        let mut body = 7u32.to_ne_bytes().to_vec();
        body.extend_from_slice(&38u32.to_ne_bytes());
        body.extend_from_slice(&65536u32.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        let out = data(ask(&mut server, INIT, 0, &body));
        assert_eq!(out.len(), 64);
        assert_eq!((u32_at(&out, 0), u32_at(&out, 4)), (Some(7), Some(31)));
        body[0] = 8;
        assert_eq!(
            ask(&mut server, INIT, 0, &body),
            Answer::Error(libc::EPROTO)
        );
        assert_eq!(ask(&mut server, INIT, 0, &[1]), Answer::Error(libc::EINVAL));
    }

    #[test]
    fn replies_are_framed_with_the_negated_errno() {
        let framed = frame(9, &Answer::Error(libc::ENOENT)).unwrap();
        assert_eq!(framed.len(), OUT_HEADER);
        assert_eq!(u32_at(&framed, 0), Some(16));
        assert_eq!(u32_at(&framed, 4), Some((-libc::ENOENT) as u32));
        assert_eq!(u64_at(&framed, 8), Some(9));
        assert_eq!(frame(9, &Answer::None), None);
        let framed = frame(1, &Answer::Data(vec![1, 2, 3])).unwrap();
        assert_eq!((framed.len(), &framed[16..]), (19, &[1u8, 2, 3][..]));
    }
}
