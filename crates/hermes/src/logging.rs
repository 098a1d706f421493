//! The operational log: one line per message, JSON or text, to stdout and to
//! `<logging.output_dir>/hermes.log`. Every value is escaped (attacker-controlled text
//! reaches these lines) and only the configured `include_fields` appear.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use hermes_core::config::{LogField, LogFormat, LogLevel};
use hermes_core::escape::escape_untrusted;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// How log lines look and where they go.
pub struct LogSettings {
    /// Least severe level written.
    pub level: LogLevel,
    /// Line format.
    pub format: LogFormat,
    /// Optional fields to include.
    pub include: Vec<LogField>,
    /// Lines also go to standard output.
    pub stdout: bool,
}

struct LineLayer {
    format: LogFormat,
    include: Vec<LogField>,
    stdout: bool,
    file: Option<Mutex<File>>,
}

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, format!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, value.to_string());
    }
}

impl Fields {
    fn push(&mut self, field: &Field, value: String) {
        let value = escape_untrusted(&value).into_owned();
        if field.name() == "message" {
            self.message = value;
        } else {
            self.pairs.push((field.name(), value));
        }
    }
}

/// Which configurable field a structured field name belongs to, if any.
fn optional_field(name: &str) -> Option<LogField> {
    match name {
        "session_id" => Some(LogField::SessionId),
        "username" => Some(LogField::Username),
        "source_ip" => Some(LogField::SourceIp),
        _ => None,
    }
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

impl LineLayer {
    fn render(&self, event: &Event<'_>) -> String {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let include = |field: LogField| self.include.contains(&field);
        let pairs: Vec<_> = fields
            .pairs
            .into_iter()
            .filter(|(name, _)| optional_field(name).is_none_or(include))
            .collect();
        let meta = event.metadata();
        let level = level_name(meta.level());
        match self.format {
            LogFormat::Json => {
                let mut object = serde_json::Map::new();
                if include(LogField::Timestamp) {
                    object.insert("timestamp".into(), hermes_core::time::now_iso8601().into());
                }
                object.insert("level".into(), level.into());
                if include(LogField::EventType) {
                    object.insert("event_type".into(), meta.target().into());
                }
                object.insert("message".into(), fields.message.into());
                for (name, value) in pairs {
                    object.insert(name.to_owned(), value.into());
                }
                serde_json::to_string(&object).unwrap_or_default()
            }
            LogFormat::Text => {
                let mut line = String::new();
                if include(LogField::Timestamp) {
                    line.push_str(&hermes_core::time::now_iso8601());
                    line.push(' ');
                }
                let _ = write!(line, "{level:<7} ");
                if include(LogField::EventType) {
                    let _ = write!(line, "{} ", meta.target());
                }
                line.push_str(&fields.message);
                for (name, value) in pairs {
                    let _ = write!(line, " {name}={value}");
                }
                line
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = self.render(event);
        line.push('\n');
        if self.stdout {
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        }
        if let Some(file) = &self.file
            && let Ok(mut file) = file.lock()
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warning => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

/// Installs the global subscriber. `log_dir` gets `hermes.log` when given.
pub fn init(settings: &LogSettings, log_dir: Option<&Path>) -> std::io::Result<()> {
    let file = match log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("hermes.log"))?,
            ))
        }
        None => None,
    };
    let layer = LineLayer {
        format: settings.format,
        include: settings.include.clone(),
        stdout: settings.stdout,
        file,
    }
    .with_filter(level_filter(settings.level));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(format: LogFormat, include: Vec<LogField>, emit: impl FnOnce()) -> String {
        struct Capture(std::sync::Arc<Mutex<Vec<String>>>, LineLayer);
        impl<S: Subscriber> Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                if let Ok(mut lines) = self.0.lock() {
                    lines.push(self.1.render(event));
                }
            }
        }
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        let layer = Capture(
            lines.clone(),
            LineLayer {
                format,
                include,
                stdout: false,
                file: None,
            },
        );
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, emit);
        lines.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    #[test]
    fn attacker_text_cannot_break_lines_or_drive_terminals() {
        let hostile = "root\n2026-01-01 INFO forged\u{1b}[2J";
        let line = capture(LogFormat::Text, LogField::ALL.to_vec(), || {
            tracing::info!(target: "hermes::auth", username = %hostile, "login attempt");
        });
        assert!(!line.contains('\n'), "{line}");
        assert!(!line.contains('\u{1b}'), "{line}");
        assert!(
            line.contains("username=root\\n2026-01-01 INFO forged\\x1b[2J"),
            "{line}"
        );
    }

    #[test]
    fn json_lines_carry_only_included_fields() {
        let line = capture(LogFormat::Json, vec![LogField::SourceIp], || {
            tracing::info!(target: "hermes::session", session_id = "abc", source_ip = "1.2.3.4", other = 5, "hello");
        });
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["message"], "hello");
        assert_eq!(value["source_ip"], "1.2.3.4");
        assert_eq!(value["other"], "5");
        assert!(value.get("session_id").is_none());
        assert!(value.get("timestamp").is_none());
        assert!(value.get("event_type").is_none());
    }
}
