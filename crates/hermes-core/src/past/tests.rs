use std::io::Read;

use super::*;

/// 2026-12-05 06:07:08 UTC.
const NOW: u64 = 1_796_450_828;

fn persona(installed_days_ago: u64) -> Persona<'static> {
    Persona {
        hostname: "web-prod-01",
        kernel_release: "6.1.0-27-amd64",
        now: NOW,
        installed: NOW - installed_days_ago * DAY,
    }
}

fn files(installed_days_ago: u64, seed: u64) -> Vec<PastFile> {
    let mut files = generate(&persona(installed_days_ago), seed);
    for file in files.iter_mut().filter(|f| f.path == WTMP) {
        *file = wtmp_before_boot(file, "6.1.0-27-amd64", NOW);
    }
    files
}

fn file<'a>(files: &'a [PastFile], path: &str) -> &'a PastFile {
    files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{path} missing from {:?}", paths(files)))
}

fn paths(files: &[PastFile]) -> Vec<&str> {
    files.iter().map(|f| f.path.as_str()).collect()
}

fn text(file: &PastFile) -> String {
    if file.path.ends_with(".gz") {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&file.data[..])
            .read_to_string(&mut out)
            .expect("gzip");
        out
    } else {
        String::from_utf8(file.data.clone()).expect("utf-8")
    }
}

fn records(file: &PastFile) -> Vec<(i16, String, u32)> {
    assert_eq!(file.data.len() % records::UTMP_SIZE, 0, "{}", file.path);
    file.data
        .chunks(records::UTMP_SIZE)
        .map(|r| {
            let user = String::from_utf8_lossy(&r[44..76])
                .trim_end_matches('\0')
                .to_owned();
            (
                i16::from_le_bytes([r[0], r[1]]),
                user,
                u32::from_le_bytes([r[340], r[341], r[342], r[343]]),
            )
        })
        .collect()
}

#[test]
fn a_server_of_some_months_has_five_weeks_of_rotated_logs_and_two_months_of_logins() {
    let files = files(120, 1);
    for path in [
        "var/log/auth.log",
        "var/log/auth.log.1",
        "var/log/auth.log.2.gz",
        "var/log/auth.log.3.gz",
        "var/log/auth.log.4.gz",
        "var/log/syslog",
        "var/log/syslog.1",
        "var/log/syslog.4.gz",
        "var/log/cron.log",
        "var/log/cron.log.1",
        "var/log/wtmp",
        "var/log/wtmp.1",
        "var/log/btmp",
        "var/log/btmp.1",
        "var/log/lastlog",
    ] {
        let f = file(&files, path);
        assert!(f.mtime <= NOW, "{path}");
        let (uid, gid, mode) = (f.uid, f.gid, f.mode);
        if path.contains("tmp") || path.ends_with("lastlog") {
            assert_eq!((uid, gid), (0, 43), "{path}");
        } else {
            assert_eq!((uid, gid, mode), (0, 4, 0o640), "{path}");
        }
    }
    assert!(!paths(&files).contains(&"var/log/auth.log.5.gz"));
    // logrotate's state says when it rotated: last Sunday (2026-11-29), and the 1st.
    let status = text(file(&files, "var/lib/logrotate/status"));
    assert!(
        status.starts_with("logrotate state -- version 2\n"),
        "{status}"
    );
    assert!(
        status.contains("\"/var/log/auth.log\" 2026-11-29-6:25:2\n"),
        "{status}"
    );
    assert!(
        status.contains("\"/var/log/wtmp\" 2026-12-1-6:25:2\n"),
        "{status}"
    );
    let total: usize = files.iter().map(|f| f.data.len()).sum();
    assert!(total < 4 << 20, "{total} bytes");

    // Every log line is before the boot, in order, and each week in its own file.
    let mut previous_end = NOW;
    for path in [
        "var/log/auth.log",
        "var/log/auth.log.1",
        "var/log/auth.log.2.gz",
    ] {
        let f = file(&files, path);
        let content = text(f);
        assert!(content.lines().count() > 100, "{path}: {content}");
        assert!(f.mtime <= previous_end, "{path}");
        previous_end = f.mtime;
        for needle in ["hermes", "Hermes", "honeypot"] {
            assert!(!content.contains(needle), "{path}");
        }
        for line in content.lines() {
            assert!(line.contains(" web-prod-01 "), "{line}");
        }
    }
    let auth = text(file(&files, "var/log/auth.log.1"));
    assert!(auth.contains("sshd["), "{auth}");
    assert!(auth.contains("CRON["), "{auth}");
    assert!(auth.contains("Failed password for"), "{auth}");
    let syslog = text(file(&files, "var/log/syslog.1"));
    assert!(
        syslog.contains("CMD (cd / && run-parts --report /etc/cron.hourly)"),
        "{syslog}"
    );

    // wtmp: this month's records, the last one the shutdown before the box's boot
    // (init writes the boot record itself); logins in pairs.
    let wtmp = records(file(&files, "var/log/wtmp"));
    assert_eq!(
        wtmp.last().map(|r| (r.0, r.1.as_str(), r.2)),
        Some((1, "shutdown", (NOW - 45) as u32))
    );
    let previous = records(file(&files, "var/log/wtmp.1"));
    assert!(
        previous.iter().any(|r| r.0 == 7 && r.1 == "admin"),
        "{previous:?}"
    );
    assert!(previous.iter().all(|r| r.2 < wtmp[0].2));
    let btmp = records(file(&files, "var/log/btmp"));
    assert!(
        btmp.iter()
            .all(|r| r.0 == 6 && !r.1.is_empty() && r.2 < NOW as u32)
    );

    // lastlog: the admin's last login, before now.
    let lastlog = &file(&files, "var/log/lastlog").data;
    let at = 1000 * records::LASTLOG_SIZE;
    let admin_last = u32::from_le_bytes([
        lastlog[at],
        lastlog[at + 1],
        lastlog[at + 2],
        lastlog[at + 3],
    ]);
    assert!(
        admin_last > (NOW - 10 * DAY) as u32 && admin_last < NOW as u32,
        "{admin_last}"
    );
}

#[test]
fn a_fresh_install_has_nothing_older_than_itself() {
    let files = files(3, 7);
    let installed = NOW - 3 * DAY;
    assert!(
        !paths(&files).iter().any(|p| p.ends_with(".gz")),
        "{:?}",
        paths(&files)
    );
    for f in &files {
        assert!(f.mtime >= installed - DAY && f.mtime <= NOW, "{}", f.path);
    }
    let wtmp = records(file(&files, "var/log/wtmp"));
    assert!(wtmp.iter().all(|r| u64::from(r.2) >= installed), "{wtmp:?}");
}

#[test]
fn each_sensor_has_its_own_past_and_its_boxes_share_it() {
    assert_eq!(files(60, 3), files(60, 3));
    assert_ne!(files(60, 3), files(60, 4));
    // A box started a day later tells the same story up to the earlier one's start.
    let earlier = files(60, 3);
    let later = generate(
        &Persona {
            now: NOW + DAY,
            installed: NOW - 60 * DAY,
            ..persona(60)
        },
        3,
    );
    let lines = |files: &[PastFile]| -> Vec<String> {
        let mut all: Vec<String> = files
            .iter()
            .filter(|f| f.path.starts_with("var/log/auth.log"))
            .flat_map(|f| text(f).lines().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        all.sort();
        all
    };
    let (earlier, later) = (lines(&earlier), lines(&later));
    let day_before = "Dec  4 12:";
    let pick = |all: &[String]| -> Vec<String> {
        all.iter()
            .filter(|l| l.starts_with(day_before))
            .cloned()
            .collect()
    };
    assert!(!pick(&earlier).is_empty());
    assert_eq!(pick(&earlier), pick(&later));
}

#[test]
#[ignore = "prints a sample for reading"]
fn print_a_sample() {
    for f in files(90, 11) {
        println!("== {} {} bytes mtime {}", f.path, f.data.len(), f.mtime);
        if !f.path.contains("tmp") && !f.path.ends_with("lastlog") {
            for line in text(&f).lines().take(25) {
                println!("{line}");
            }
        }
    }
}

#[test]
#[ignore = "prints how long one box's past takes to tell"]
fn time_a_past() {
    let started = std::time::Instant::now();
    let mut bytes = 0;
    for seed in 0..10 {
        bytes += files(200, seed).iter().map(|f| f.data.len()).sum::<usize>();
    }
    println!(
        "10 pasts: {:?}, {} bytes each",
        started.elapsed(),
        bytes / 10
    );
}
