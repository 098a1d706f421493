//! `hermes replay`: plays a session's recording to the terminal, sanitised and paced, or
//! prints its command timeline (`--commands`).

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use hermes_core::escape::escape_untrusted;

use crate::archive::{Archive, Located, SessionRecord, is_session_id};
use crate::cast::{self, CastReader, Line};
use crate::cmd::{self, ArchiveArgs, UsageError};
use crate::terminal::Sanitizer;
use crate::timeline;

/// Pauses shorter than this are carried over rather than slept, so fast replays do not
/// make a system call per event.
const MIN_SLEEP: Duration = Duration::from_millis(2);

/// `hermes replay` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// A session id (12 hex digits) or the path of a .cast file.
    #[arg(value_name = "SESSION")]
    pub session: String,
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// Playback speed: 2 plays twice as fast.
    #[arg(long, value_name = "X", default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Longest pause in seconds (as recorded, before --speed); 0 keeps every pause.
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = parse_max_idle)]
    pub max_idle: f64,
    /// Which channel's recording to play (0 = the first).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub channel: u32,
    /// Print the session's commands and file transfers from its metadata instead.
    #[arg(long)]
    pub commands: bool,
}

fn parse_speed(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
        .ok_or_else(|| "expected a number greater than 0".to_owned())
}

fn parse_max_idle(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| "expected a number of seconds, 0 or more".to_owned())
}

/// How recorded time becomes playback time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Divides every pause.
    pub speed: f64,
    /// Caps every pause before the speed applies; 0 = no cap.
    pub max_idle: f64,
}

impl Pacing {
    /// The pause to play for a recorded gap of `gap` seconds.
    pub fn delay(&self, gap: f64) -> Duration {
        if gap.is_nan() || gap <= 0.0 {
            return Duration::ZERO;
        }
        let capped = if self.max_idle > 0.0 {
            gap.min(self.max_idle)
        } else {
            gap
        };
        Duration::try_from_secs_f64(capped / self.speed).unwrap_or(Duration::MAX)
    }
}

/// Runs `hermes replay`.
pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    if args.commands {
        let record = metadata_for(args)?;
        let mut stdout = io::stdout().lock();
        return stdout
            .write_all(timeline::render(&record).as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to stdout");
    }
    let path = cast_for(args)?;
    let (_, mut reader) = cast::open(&path)?;
    let pacing = Pacing {
        speed: args.speed,
        max_idle: args.max_idle,
    };
    let mut stdout = io::stdout().lock();
    let shown = path.display().to_string();
    play(
        &mut reader,
        pacing,
        &mut stdout,
        &mut std::thread::sleep,
        &mut |line| cmd::warn(format!("{shown}: {line}")),
    )
    .with_context(|| format!("replaying {shown}"))
}

/// Plays the output events of `reader` to `out`, sanitised, pausing with `sleep`;
/// lines that are not events are reported to `warn` and skipped. Whatever the
/// recording left set on the terminal is reset at the end.
pub fn play<R: BufRead, W: Write>(
    reader: &mut CastReader<R>,
    pacing: Pacing,
    out: &mut W,
    sleep: &mut dyn FnMut(Duration),
    warn: &mut dyn FnMut(String),
) -> io::Result<()> {
    let mut sanitizer = Sanitizer::new();
    let mut clock = 0.0f64;
    let mut owed = Duration::ZERO;
    let result = loop {
        let line = match reader.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        };
        let event = match line {
            Line::Event(event) => event,
            Line::Bad {
                number,
                last: true,
                reason,
            } => {
                warn(format!(
                    "line {number}, the last, is unreadable ({reason}): the recording was cut short there; ignored"
                ));
                continue;
            }
            Line::Bad { number, reason, .. } => {
                warn(format!("line {number} is not an event ({reason}); skipped"));
                continue;
            }
        };
        if event.code != "o" {
            continue;
        }
        owed += pacing.delay(event.time - clock);
        clock = clock.max(event.time);
        if owed >= MIN_SLEEP {
            sleep(owed);
            owed = Duration::ZERO;
        }
        let text = sanitizer.feed(&event.data);
        if !text.is_empty()
            && let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        {
            break Err(error);
        }
    };
    let reset = sanitizer.finish();
    let ended = out.write_all(reset.as_bytes()).and_then(|()| out.flush());
    result.and(ended)
}

/// The cast to play: the given file, or the session's recording of `--channel`.
fn cast_for(args: &ReplayArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = as_cast_path(&args.session)? {
        return Ok(path);
    }
    let (archive, located) = locate(args)?;
    let record = SessionRecord::read(&located.metadata_path()).ok();
    archive
        .cast_for(&located, record.as_ref(), args.channel)
        .ok_or_else(|| {
            let channels = located.channels();
            let have = if channels.is_empty() {
                "it has no recordings".to_owned()
            } else {
                let list: Vec<String> = channels.iter().map(u32::to_string).collect();
                format!("recorded channels: {}", list.join(", "))
            };
            anyhow!(
                "session {} has no recording of channel {} under {} ({have})",
                located.session,
                args.channel,
                archive.root().display()
            )
        })
}

/// The session's metadata, for `--commands`.
fn metadata_for(args: &ReplayArgs) -> anyhow::Result<SessionRecord> {
    let path = match as_cast_path(&args.session)? {
        Some(cast) => metadata_beside(&cast)
            .ok_or_else(|| anyhow!("no metadata file beside {}", cast.display()))?,
        None => {
            let (_, located) = locate(args)?;
            located.metadata_path()
        }
    };
    if !path.is_file() {
        return Err(anyhow!("no metadata file {}", path.display()));
    }
    SessionRecord::read(&path).map_err(|reason| anyhow!("{}: {reason}", path.display()))
}

/// `Some(path)` when SESSION names a cast file rather than a session id.
fn as_cast_path(session: &str) -> anyhow::Result<Option<PathBuf>> {
    if is_session_id(session) {
        return Ok(None);
    }
    let path = Path::new(session);
    if session.ends_with(".cast") || path.components().count() > 1 {
        if !path.is_file() {
            return Err(anyhow!("no such file {}", path.display()));
        }
        return Ok(Some(path.to_path_buf()));
    }
    Err(UsageError(format!(
        "SESSION {} is neither a session id (12 lowercase hex digits) nor a .cast file",
        escape_untrusted(session)
    ))
    .into())
}

fn locate(args: &ReplayArgs) -> anyhow::Result<(Archive, Located)> {
    let archive = args.archive.open()?;
    let located = archive
        .locate(&args.session, &mut cmd::warn)
        .with_context(|| format!("cannot search {}", archive.root().display()))?
        .ok_or_else(|| {
            anyhow!(
                "no session {} under {}",
                args.session,
                archive.root().display()
            )
        })?;
    Ok((archive, located))
}

/// `<dir>/<session>.json` for `<dir>/<session>.cast` or `<dir>/<session>-<n>.cast`.
fn metadata_beside(cast: &Path) -> Option<PathBuf> {
    let stem = cast.file_stem()?.to_str()?;
    let session = stem.get(..12).filter(|s| is_session_id(s))?;
    let rest = &stem[12..];
    if !(rest.is_empty()
        || rest
            .strip_prefix('-')
            .is_some_and(|n| n.parse::<u32>().is_ok()))
    {
        return None;
    }
    Some(cast.with_file_name(format!("{session}.json")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "{\"version\":2,\"width\":80,\"height\":24}\n";

    fn run_play(cast: &str, pacing: Pacing) -> (String, Vec<Duration>, Vec<String>) {
        let (_, mut reader) = CastReader::new(cast.as_bytes()).expect("header");
        let mut out = Vec::new();
        let mut sleeps = Vec::new();
        let mut warnings = Vec::new();
        play(
            &mut reader,
            pacing,
            &mut out,
            &mut |d| sleeps.push(d),
            &mut |w| warnings.push(w),
        )
        .expect("play");
        (String::from_utf8(out).expect("utf-8"), sleeps, warnings)
    }

    const NORMAL: Pacing = Pacing {
        speed: 1.0,
        max_idle: 2.0,
    };

    #[test]
    fn pacing() {
        assert_eq!(NORMAL.delay(0.5), Duration::from_millis(500));
        assert_eq!(NORMAL.delay(30.0), Duration::from_secs(2));
        assert_eq!(NORMAL.delay(-1.0), Duration::ZERO);
        assert_eq!(NORMAL.delay(f64::NAN), Duration::ZERO);
        let fast = Pacing {
            speed: 4.0,
            max_idle: 0.0,
        };
        assert_eq!(fast.delay(30.0), Duration::from_millis(7500));
        let slow = Pacing {
            speed: 0.5,
            max_idle: 1.0,
        };
        assert_eq!(slow.delay(30.0), Duration::from_secs(2));
    }

    #[test]
    fn plays_output_only_with_timing() {
        let cast = format!(
            "{HEADER}[0.5, \"o\", \"$ \"]\n[1.0, \"i\", \"ls\\r\"]\n[1.1, \"o\", \"ls\\r\\n\"]\n\
             [1.1001, \"o\", \"a b\\r\\n\"]\n[60, \"r\", \"100x30\"]\n[61, \"o\", \"$ \"]\n"
        );
        let (out, sleeps, warnings) = run_play(&cast, NORMAL);
        assert_eq!(out, "$ ls\r\na b\r\n$ ");
        // 0.5 s; 0.6 s (the input event does not reset the clock); the 0.1 ms gap is
        // carried over into the next pause, which the cap makes 2 s.
        let millis: Vec<u128> = sleeps.iter().map(Duration::as_millis).collect();
        assert_eq!(millis, [500, 600, 2000]);
        assert!(warnings.is_empty());
    }

    #[test]
    fn output_is_sanitised_across_events_and_reset_at_the_end() {
        let cast = format!(
            "{HEADER}[0, \"o\", \"a\\u001b]52;c;\"]\n[0, \"o\", \"Y3VybA==\\u0007b\\u001b[\"]\n\
             [0, \"o\", \"6nc\\u001b[?1049h\\u001b[31md\"]\n"
        );
        let (out, _, _) = run_play(&cast, NORMAL);
        assert_eq!(out, "abc\x1b[?1049h\x1b[31md\x1b[?1049l\x1b[0m");
    }

    #[test]
    fn cut_short_recording_plays_and_warns() {
        let cast =
            format!("{HEADER}[0, \"o\", \"one\"]\nxx\n[0.1, \"o\", \"two\"]\n[0.2, \"o\", \"th");
        let (out, _, warnings) = run_play(&cast, NORMAL);
        assert_eq!(out, "onetwo");
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings[0].contains("line 3 is not an event"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("line 5, the last") && warnings[1].contains("cut short"));
    }

    #[test]
    fn metadata_next_to_casts() {
        assert_eq!(
            metadata_beside(Path::new("/r/2026/11/23/0123456789ab-2.cast")),
            Some(PathBuf::from("/r/2026/11/23/0123456789ab.json"))
        );
        assert_eq!(
            metadata_beside(Path::new("0123456789ab.cast")),
            Some(PathBuf::from("0123456789ab.json"))
        );
        assert_eq!(metadata_beside(Path::new("/tmp/demo.cast")), None);
        assert_eq!(metadata_beside(Path::new("/tmp/0123456789abc.cast")), None);
    }

    #[test]
    fn speed_and_idle_arguments() {
        assert_eq!(parse_speed("2.5"), Ok(2.5));
        assert!(parse_speed("0").is_err());
        assert!(parse_speed("-1").is_err());
        assert!(parse_speed("inf").is_err());
        assert!(parse_speed("fast").is_err());
        assert_eq!(parse_max_idle("0"), Ok(0.0));
        assert!(parse_max_idle("-0.5").is_err());
        assert!(parse_max_idle("NaN").is_err());
    }
}
