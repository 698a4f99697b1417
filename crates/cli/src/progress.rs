//! Transfer progress: bars on a terminal, plain lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use wasmlet_oci::client::Progress;

/// Progress on stderr.
pub enum Reporter {
    /// One bar per blob.
    Bars {
        /// The bars' container.
        multi: MultiProgress,
        /// Bars by blob id.
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
    /// A line when a blob starts and when it ends.
    Lines,
    /// Nothing (`--quiet`).
    Quiet,
}

impl Reporter {
    /// Bars when stderr is a terminal, plain lines otherwise, nothing when quiet.
    pub fn for_stderr(quiet: bool) -> Reporter {
        match (quiet, std::io::stderr().is_terminal()) {
            (true, _) => Reporter::Quiet,
            (false, true) => Reporter::Bars {
                multi: MultiProgress::new(),
                bars: Mutex::default(),
            },
            (false, false) => Reporter::Lines,
        }
    }
}

/// `sha256:0123456789ab`: enough of a digest to tell blobs apart.
fn short(id: &str) -> &str {
    &id[..id.len().min(19)]
}

impl Progress for Reporter {
    fn start(&self, id: &str, total: u64) {
        match self {
            Reporter::Bars { multi, bars } => {
                let bar = multi.add(ProgressBar::new(total));
                let style = ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_message(short(id).to_string());
                if let Ok(mut bars) = bars.lock() {
                    bars.insert(id.to_string(), bar);
                }
            }
            Reporter::Lines => eprintln!("transferring {} ({total} bytes)", short(id)),
            Reporter::Quiet => {}
        }
    }

    fn advance(&self, id: &str, n: u64) {
        self.with_bar(id, |b| b.inc(n));
    }

    fn restart(&self, id: &str, at: u64) {
        self.with_bar(id, |b| b.set_position(at));
        if let Reporter::Lines = self {
            eprintln!("resuming {} at {at} bytes", short(id));
        }
    }

    fn finish(&self, id: &str) {
        self.with_bar(id, |b| b.finish());
        if let Reporter::Lines = self {
            eprintln!("done {}", short(id));
        }
    }
}

impl Reporter {
    fn with_bar(&self, id: &str, f: impl FnOnce(&ProgressBar)) {
        if let Reporter::Bars { bars, .. } = self
            && let Some(bar) = bars.lock().ok().and_then(|b| b.get(id).cloned())
        {
            f(&bar);
        }
    }
}
