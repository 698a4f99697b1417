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
    // Split on newlines only: a `\r` ending an entry's text (a progress bar's) is the guest's.
    let entries: Vec<Entry> = text
        .split('\n')
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

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// One line of a log file as the runtime writes it, kept with what it should parse to.
    #[derive(Debug, Clone)]
    struct Line {
        time: Timestamp,
        time_text: String,
        stream: &'static str,
        partial: bool,
        content: String,
    }

    impl Line {
        /// The line in the CRI format, without its newline.
        fn text(&self) -> String {
            let tag = if self.partial { "P" } else { "F" };
            format!("{} {} {tag} {}", self.time_text, self.stream, self.content)
        }
    }

    /// Times from year 0000 to 9999, to the nanosecond.
    fn timestamp() -> impl Strategy<Value = Timestamp> {
        (-62_167_219_200i64..=253_402_300_799, 0i32..1_000_000_000)
            .prop_map(|(second, nano)| Timestamp::new(second, nano).unwrap())
    }

    fn line() -> impl Strategy<Value = Line> {
        (
            timestamp(),
            any::<bool>(),
            prop::sample::select(&["stdout", "stderr"][..]),
            any::<bool>(),
            "[^\n]{0,30}",
        )
            .prop_map(|(time, nanos, stream, partial, content)| Line {
                // The runtime writes nine digits of nanoseconds; RFC 3339 allows fewer.
                time_text: if nanos {
                    time.strftime("%Y-%m-%dT%H:%M:%S.%NZ").to_string()
                } else {
                    time.to_string()
                },
                time,
                stream,
                partial,
                content,
            })
    }

    /// A log file: lines of the CRI format, some garbage lines between them, and whether the
    /// last line ends with a newline.
    fn log() -> impl Strategy<Value = (String, Vec<Line>)> {
        let garbage =
            "\\PC{0,30}".prop_filter("garbage must not parse", |g| parse_line(g).is_none());
        (
            prop::collection::vec((line(), proptest::option::weighted(0.2, garbage)), 0..12),
            any::<bool>(),
        )
            .prop_map(|(lines, newline_at_end)| {
                let mut text = String::new();
                for (line, garbage) in &lines {
                    if let Some(g) = garbage {
                        text.push_str(g);
                        text.push('\n');
                    }
                    text.push_str(&line.text());
                    text.push('\n');
                }
                if !newline_at_end {
                    text.pop();
                }
                (text, lines.into_iter().map(|(line, _)| line).collect())
            })
    }

    fn options() -> impl Strategy<Value = LogOptions> {
        (
            any::<bool>(),
            any::<bool>(),
            proptest::option::of(prop_oneof![0u64..16, any::<u64>()]),
            proptest::option::of(timestamp()),
            any::<bool>(),
            proptest::option::of(prop_oneof![0u64..400, any::<u64>()]),
        )
            .prop_map(
                |(follow, previous, tail_lines, since, timestamps, limit_bytes)| LogOptions {
                    follow,
                    previous,
                    tail_lines,
                    since,
                    timestamps,
                    limit_bytes,
                },
            )
    }

    /// What `kubectl logs` should show of `lines` with `options`, computed from the lines
    /// generated rather than from parsing.
    fn expected(lines: &[Line], options: &LogOptions) -> Vec<u8> {
        let kept: Vec<&Line> = lines
            .iter()
            .filter(|line| options.since.is_none_or(|since| line.time >= since))
            .collect();
        let tail = options.tail_lines.map_or(kept.len(), |tail| {
            kept.len().min(usize::try_from(tail).unwrap_or(usize::MAX))
        });
        let mut out = String::new();
        for line in &kept[kept.len() - tail..] {
            if options.timestamps {
                out.push_str(&line.time_text);
                out.push(' ');
            }
            out.push_str(&line.content);
            if !line.partial {
                out.push('\n');
            }
        }
        let mut out = out.into_bytes();
        if let Some(limit) = options.limit_bytes {
            out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        out
    }

    proptest! {
        /// `parse_line` never panics, and what it accepts is the line split at its first
        /// three spaces, with a `P` or `F` tag and a valid time.
        #[test]
        fn parse_line_properties_on_arbitrary_text(line in any::<String>()) {
            check_parsed(&line)?;
        }

        /// The same on text that looks like a CRI line: a time, then arbitrary fields.
        #[test]
        fn parse_line_properties_on_cri_like_text(
            time in prop_oneof![
                timestamp().prop_map(|t| t.to_string()),
                concat!(
                    "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}",
                    "(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2})?",
                ),
            ],
            rest in "(stdout|stderr|\\PC{0,3})[ ]{0,2}[PFX]{0,2}[ ]?\\PC{0,20}",
        ) {
            check_parsed(&format!("{time} {rest}"))?;
        }

        /// A line in the CRI format parses back to its time, stream, tag and text.
        #[test]
        fn parse_line_properties_round_trip(line in line()) {
            let text = line.text();
            let entry = parse_line(&text);
            prop_assert!(entry.is_some(), "{:?} does not parse", text);
            let entry = entry.unwrap();
            prop_assert_eq!(entry.time, line.time);
            prop_assert_eq!(entry.time_text, line.time_text.as_str());
            prop_assert_eq!(entry.stream, line.stream);
            prop_assert_eq!(entry.partial, line.partial);
            prop_assert_eq!(entry.content, line.content.as_str());
        }

        /// `render` never panics on arbitrary text and options, never exceeds `limitBytes`
        /// and never shows more than the text has (plus a final newline).
        #[test]
        fn render_properties_on_arbitrary_text(text in any::<String>(), options in options()) {
            let out = render(&text, &options);
            if let Some(limit) = options.limit_bytes {
                prop_assert!(out.len() as u64 <= limit);
            }
            prop_assert!(out.len() <= text.len() + 1, "{} bytes from {}", out.len(), text.len());
        }

        /// With no options, `render` shows every entry's text in order, each full line
        /// ending with a newline, and skips the garbage lines.
        #[test]
        fn render_properties_show_every_entry((text, lines) in log()) {
            let out = render(&text, &LogOptions::default());
            let want = expected(&lines, &LogOptions::default());
            prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want));
        }

        /// With any options, `render` shows the entries since `since`, the last `tailLines`
        /// of them, with timestamps when asked, cut at `limitBytes`.
        #[test]
        fn render_properties_honour_the_options((text, lines) in log(), options in options()) {
            let out = render(&text, &options);
            let want = expected(&lines, &options);
            prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want));
        }
    }

    /// What `parse_line` makes of `line` is `line` split at its first three spaces.
    fn check_parsed(line: &str) -> Result<(), TestCaseError> {
        let Some(entry) = parse_line(line) else {
            return Ok(());
        };
        let tag = if entry.partial { "P" } else { "F" };
        let head = format!("{} {} {tag}", entry.time_text, entry.stream);
        let whole = format!("{head} {}", entry.content);
        prop_assert!(
            line == whole || line == head && entry.content.is_empty(),
            "{:?} parsed as {:?}",
            line,
            entry
        );
        prop_assert!(!entry.time_text.contains(' ') && !entry.stream.contains(' '));
        prop_assert_eq!(entry.time, entry.time_text.parse::<Timestamp>().unwrap());
        Ok(())
    }
}
