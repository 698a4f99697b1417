//! Reading containers' CRI-format log files as the kubelet's `/containerLogs` does: the
//! current or previous run, `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps` and
//! `limitBytes`. Parsing and selection are pure; the server does the reading and following.

use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;

/// Errors selecting a log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query parameter has a bad value.
    #[error("bad query parameter {name}: {value:?}")]
    Query {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// The container has no log of the wanted run.
    #[error("previous terminated container {0:?} not found")]
    NoPrevious(String),
    /// The container has no log yet.
    #[error("container {0:?} has no log yet")]
    NoLog(String),
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What `/containerLogs` was asked for (the query string of `kubectl logs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the container stops.
    pub follow: bool,
    /// The previous run instead of the current one.
    pub previous: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Only lines written at or after this time.
    pub since: Option<Timestamp>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

impl LogOptions {
    /// Parses the query pairs; `now` turns `sinceSeconds` into a time.
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: Timestamp,
    ) -> Result<Self> {
        let mut options = Self::default();
        for (name, value) in pairs {
            options.set(name, value, now)?;
        }
        Ok(options)
    }

    fn set(&mut self, name: &str, value: &str, now: Timestamp) -> Result<()> {
        match name {
            "follow" => self.follow = flag("follow", value)?,
            "previous" => self.previous = flag("previous", value)?,
            "timestamps" => self.timestamps = flag("timestamps", value)?,
            "tailLines" => self.tail_lines = Some(number("tailLines", value)?),
            "limitBytes" => self.limit_bytes = Some(number("limitBytes", value)?),
            "sinceSeconds" => {
                let seconds = number("sinceSeconds", value)?;
                let span = k8s_openapi::jiff::SignedDuration::from_secs(seconds as i64);
                self.since = now.checked_sub(span).ok();
            }
            "sinceTime" => {
                self.since = Some(value.parse().map_err(|_| bad("sinceTime", value))?);
            }
            _ => {}
        }
        Ok(())
    }
}

fn bad(name: &'static str, value: &str) -> Error {
    Error::Query {
        name,
        value: value.into(),
    }
}

fn flag(name: &'static str, value: &str) -> Result<bool> {
    match value {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(name, value)),
    }
}

fn number(name: &'static str, value: &str) -> Result<u64> {
    value.parse().map_err(|_| bad(name, value))
}

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// When it was written.
    pub time: Timestamp,
    /// The time as written in the file.
    pub time_text: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// A piece of a longer line (`P`), not followed by a newline.
    pub partial: bool,
    /// The text.
    pub content: &'a str,
}

/// Parses `<RFC3339Nano> <stream> <P|F> <content>`; None for a malformed line.
pub fn parse_line(line: &str) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time_text = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or("");
    let partial = match tag {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    Some(Entry {
        time: time_text.parse().ok()?,
        time_text,
        stream,
        partial,
        content,
    })
}

/// Renders the text of CRI log files (oldest first) as `kubectl logs` shows it, honouring
/// `tailLines`, `since`, `timestamps` and `limitBytes`.
pub fn render(text: &str, options: &LogOptions) -> Vec<u8> {
    let entries: Vec<Entry> = text
        .lines()
        .filter_map(parse_line)
        .filter(|entry| options.since.is_none_or(|since| entry.time >= since))
        .collect();
    let skip = match options.tail_lines {
        Some(tail) => entries
            .len()
            .saturating_sub(usize::try_from(tail).unwrap_or(usize::MAX)),
        None => 0,
    };
    let mut out = Vec::new();
    for entry in &entries[skip..] {
        write_entry(&mut out, entry, options.timestamps);
    }
    if let Some(limit) = options.limit_bytes {
        out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    out
}

/// Appends one entry's text, with its timestamp when asked.
pub fn write_entry(out: &mut Vec<u8>, entry: &Entry, timestamps: bool) {
    if timestamps {
        out.extend_from_slice(entry.time_text.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(entry.content.as_bytes());
    if !entry.partial {
        out.push(b'\n');
    }
}

/// The runs (`<n>.log`) in a container's log directory, oldest first.
pub fn runs(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut runs: Vec<u32> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    runs.sort_unstable();
    runs
}

/// The log files of the wanted run, oldest rotated file first; the last one is current.
pub fn files(dir: &Path, container: &str, previous: bool) -> Result<Vec<PathBuf>> {
    let runs = runs(dir);
    let run = if previous {
        runs.iter()
            .rev()
            .nth(1)
            .ok_or_else(|| Error::NoPrevious(container.into()))?
    } else {
        runs.last().ok_or_else(|| Error::NoLog(container.into()))?
    };
    let current = dir.join(format!("{run}.log"));
    let mut files: Vec<PathBuf> = (1..10)
        .rev()
        .map(|n| dir.join(format!("{run}.log.{n}")))
        .filter(|path| path.exists())
        .collect();
    files.push(current);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2024-01-01T00:00:01.000000001Z stdout F hello from stdout!\n\
        2024-01-01T00:00:02Z stderr F hello from stderr!\n\
        2024-01-01T00:00:03Z stdout P Args are\n\
        2024-01-01T00:00:03Z stdout F : []\n\
        garbage\n";

    fn render_with(options: LogOptions) -> String {
        String::from_utf8(render(LOG, &options)).unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn whole_log_joins_partial_lines() {
        assert_eq!(
            render_with(LogOptions::default()),
            "hello from stdout!\nhello from stderr!\nArgs are: []\n"
        );
    }

    #[test]
    fn tail_since_timestamps_and_limit() {
        let tail = LogOptions {
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(render_with(tail), ": []\n");
        let since = LogOptions {
            since: Some("2024-01-01T00:00:02Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(render_with(since), "hello from stderr!\nArgs are: []\n");
        let stamped = LogOptions {
            timestamps: true,
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(
            render_with(stamped),
            "2024-01-01T00:00:03Z Args are2024-01-01T00:00:03Z : []\n"
        );
        let limited = LogOptions {
            limit_bytes: Some(5),
            ..Default::default()
        };
        assert_eq!(render_with(limited), "hello");
    }

    #[test]
    fn query_parsing() {
        let now = at(1000);
        let pairs = [
            ("follow", "true"),
            ("tailLines", "10"),
            ("sinceSeconds", "60"),
            ("x", "y"),
        ];
        let options = LogOptions::from_query(pairs, now).unwrap();
        assert!(options.follow);
        assert_eq!(options.tail_lines, Some(10));
        assert_eq!(options.since, Some(at(940)));
        let since = LogOptions::from_query([("sinceTime", "2024-01-01T00:00:00Z")], now).unwrap();
        assert_eq!(since.since, Some("2024-01-01T00:00:00Z".parse().unwrap()));
        assert!(LogOptions::from_query([("tailLines", "-1")], now).is_err());
        assert!(LogOptions::from_query([("previous", "maybe")], now).is_err());
    }

    #[test]
    fn current_and_previous_runs() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["0.log", "1.log.1", "1.log", "10.log", "notes.txt"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(runs(dir.path()), [0, 1, 10]);
        assert_eq!(
            files(dir.path(), "c", false).unwrap(),
            [dir.path().join("10.log")]
        );
        let previous = files(dir.path(), "c", true).unwrap();
        assert_eq!(
            previous,
            [dir.path().join("1.log.1"), dir.path().join("1.log")]
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            files(empty.path(), "c", true),
            Err(Error::NoPrevious(_))
        ));
        assert!(matches!(
            files(empty.path(), "c", false),
            Err(Error::NoLog(_))
        ));
    }
}
