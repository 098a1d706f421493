//! Lines a sink could not write yet (a full disk, an I/O error), kept in order to be
//! written before anything newer once writes succeed again. The backlog is bounded
//! in bytes: what does not fit is counted, never lost silently, and the count is
//! reported with one line (built by the caller) after the backlog has been written.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Lines waiting for their sink, and the count of those that did not fit.
#[derive(Debug)]
pub(crate) struct Backlog {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    max_bytes: usize,
    /// Lines dropped since the last report was written.
    unreported: u64,
    /// Every line dropped since start (the metric).
    dropped: Arc<AtomicU64>,
}

impl Backlog {
    /// An empty backlog holding at most `max_bytes` bytes of lines.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Backlog {
            lines: VecDeque::new(),
            bytes: 0,
            max_bytes,
            unreported: 0,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The counter of dropped lines, shared with whoever reports metrics.
    pub(crate) fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    /// Whether anything waits to be written (lines or a drop report).
    pub(crate) fn is_waiting(&self) -> bool {
        !self.lines.is_empty() || self.unreported > 0
    }

    /// Lines waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Writes what waits, oldest first, then the report of what was dropped (made by
    /// `report` from the count). Stops at the first failure, keeping the rest.
    pub(crate) fn drain(
        &mut self,
        write: &mut dyn FnMut(&[u8]) -> io::Result<()>,
        report: &dyn Fn(u64) -> Vec<u8>,
    ) -> io::Result<()> {
        while let Some(line) = self.lines.front() {
            write(line)?;
            self.bytes -= line.len();
            self.lines.pop_front();
        }
        if self.unreported > 0 {
            write(&report(self.unreported))?;
            self.unreported = 0;
        }
        Ok(())
    }

    /// Writes `line` after everything that waits. When that fails the line waits too,
    /// or, past the bound, is counted as dropped.
    pub(crate) fn write(
        &mut self,
        line: Vec<u8>,
        write: &mut dyn FnMut(&[u8]) -> io::Result<()>,
        report: &dyn Fn(u64) -> Vec<u8>,
    ) -> io::Result<()> {
        let result = self.drain(write, report).and_then(|()| write(&line));
        if result.is_err() {
            self.keep(line);
        }
        result
    }

    /// Gives up on everything waiting (the writer is stopping): counted as dropped.
    /// Returns how many lines that was.
    pub(crate) fn abandon(&mut self) -> u64 {
        let count = self.lines.len() as u64;
        self.lines.clear();
        self.bytes = 0;
        self.dropped.fetch_add(count, Ordering::Relaxed);
        self.unreported = 0;
        count
    }

    fn keep(&mut self, line: Vec<u8>) {
        if self.bytes + line.len() > self.max_bytes {
            self.unreported += 1;
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.bytes += line.len();
            self.lines.push_back(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A destination that fails while `full` is set, as a disk without space.
    struct Disk {
        full: bool,
        lines: Vec<Vec<u8>>,
    }

    impl Disk {
        fn write(&mut self, line: &[u8]) -> io::Result<()> {
            if self.full {
                return Err(io::Error::from_raw_os_error(28));
            }
            self.lines.push(line.to_vec());
            Ok(())
        }
    }

    fn report(count: u64) -> Vec<u8> {
        format!("dropped {count}").into_bytes()
    }

    fn line(i: usize) -> Vec<u8> {
        format!("line {i:04}").into_bytes()
    }

    #[test]
    fn lines_wait_in_order_and_land_once_writes_succeed() {
        let mut disk = Disk {
            full: false,
            lines: Vec::new(),
        };
        let mut backlog = Backlog::new(1 << 20);
        backlog
            .write(line(0), &mut |l| disk.write(l), &report)
            .expect("written");
        disk.full = true;
        for i in 1..10 {
            assert!(
                backlog
                    .write(line(i), &mut |l| disk.write(l), &report)
                    .is_err()
            );
        }
        assert_eq!(backlog.len(), 9);
        assert!(backlog.is_waiting());
        disk.full = false;
        backlog
            .write(line(10), &mut |l| disk.write(l), &report)
            .expect("written");
        let expected: Vec<Vec<u8>> = (0..=10).map(line).collect();
        assert_eq!(disk.lines, expected);
        assert!(!backlog.is_waiting());
        assert_eq!(backlog.dropped_counter().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn overflow_is_counted_and_reported_after_the_backlog() {
        let mut disk = Disk {
            full: true,
            lines: Vec::new(),
        };
        // Room for exactly five lines of nine bytes.
        let mut backlog = Backlog::new(5 * 9);
        for i in 0..12 {
            assert!(
                backlog
                    .write(line(i), &mut |l| disk.write(l), &report)
                    .is_err()
            );
        }
        assert_eq!(backlog.len(), 5);
        let dropped = backlog.dropped_counter();
        assert_eq!(dropped.load(Ordering::Relaxed), 7);
        // A retry on a still-full disk changes nothing.
        assert!(backlog.drain(&mut |l| disk.write(l), &report).is_err());
        assert_eq!(backlog.len(), 5);
        disk.full = false;
        backlog
            .drain(&mut |l| disk.write(l), &report)
            .expect("drained");
        let mut expected: Vec<Vec<u8>> = (0..5).map(line).collect();
        expected.push(report(7));
        assert_eq!(disk.lines, expected);
        assert!(!backlog.is_waiting());
        // The report is written once; the metric keeps the total.
        backlog
            .write(line(99), &mut |l| disk.write(l), &report)
            .expect("written");
        assert_eq!(disk.lines.len(), 7);
        assert_eq!(dropped.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn a_report_that_fails_is_written_later_with_the_later_drops() {
        let mut disk = Disk {
            full: true,
            lines: Vec::new(),
        };
        let mut backlog = Backlog::new(0);
        for i in 0..3 {
            assert!(
                backlog
                    .write(line(i), &mut |l| disk.write(l), &report)
                    .is_err()
            );
        }
        assert!(backlog.drain(&mut |l| disk.write(l), &report).is_err());
        assert!(
            backlog
                .write(line(3), &mut |l| disk.write(l), &report)
                .is_err()
        );
        disk.full = false;
        backlog
            .write(line(4), &mut |l| disk.write(l), &report)
            .expect("written");
        assert_eq!(disk.lines, vec![report(4), line(4)]);
        assert_eq!(backlog.dropped_counter().load(Ordering::Relaxed), 4);
    }

    #[test]
    fn abandoning_counts_what_waited() {
        let mut disk = Disk {
            full: true,
            lines: Vec::new(),
        };
        let mut backlog = Backlog::new(1 << 20);
        for i in 0..4 {
            let _ = backlog.write(line(i), &mut |l| disk.write(l), &report);
        }
        assert_eq!(backlog.abandon(), 4);
        assert_eq!(backlog.dropped_counter().load(Ordering::Relaxed), 4);
        assert!(!backlog.is_waiting());
    }
}
