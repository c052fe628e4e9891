//! The progress bar on stderr, or nothing when quiet or not on a terminal, so
//! scripts capturing the output see only the report.

use std::{io::IsTerminal, time::Duration};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One bar reused across a run's phases.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar on stderr if `wanted` and stderr is a terminal, else a hidden one.
    pub fn new(wanted: bool) -> Self {
        let bar = if wanted && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// Starts a counted phase of `len` steps.
    pub fn phase(&self, name: &str, len: u64) {
        // Counts first, so the new prefix is never drawn with the old phase's numbers.
        self.bar.set_length(len);
        self.bar.set_position(0);
        self.bar.set_message("");
        self.bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
                .expect("constant template is valid")
                .progress_chars("=> "),
        );
        self.bar.set_prefix(name.to_owned());
    }

    /// Starts an open-ended phase (a spinner with a message).
    pub fn spinner(&self, name: &str) {
        self.bar.set_style(
            ProgressStyle::with_template("{prefix:>12} {spinner} {elapsed} {msg}")
                .expect("constant template is valid"),
        );
        self.bar.set_prefix(name.to_owned());
        self.bar.set_message("");
    }

    /// Advances a counted phase.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Sets a counted phase's position.
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    /// Sets the text after the bar.
    pub fn message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// Removes the bar before the report is printed.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
