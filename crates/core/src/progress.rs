//! Progress output: one indicatif bar per running stage and an overall line on a
//! terminal; plain timestamped lines otherwise (CI logs, pipes).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Minimum time between two plain progress lines of one stage.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// Owns the terminal for one command.
pub struct Reporter {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    quiet: bool,
}

impl Reporter {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new(quiet: bool) -> Reporter {
        if std::io::stderr().is_terminal() && !quiet {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(0));
            overall.set_style(
                ProgressStyle::with_template("{prefix:.bold} {pos}/{len} stages {wide_msg}").expect("template"),
            );
            overall.set_prefix("overall");
            Reporter {
                multi: Some(multi),
                overall: Some(overall),
                quiet,
            }
        } else {
            Reporter {
                multi: None,
                overall: None,
                quiet,
            }
        }
    }

    /// A line above the bars (or on its own when plain).
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    pub fn overall(&self, done: usize, total: usize, running: &[String]) {
        if let Some(o) = &self.overall {
            o.set_length(total as u64);
            o.set_position(done as u64);
            o.set_message(if running.is_empty() {
                String::new()
            } else {
                format!("running: {}", running.join(", "))
            });
        }
    }

    pub fn stage(&self, name: &str) -> Progress {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new_spinner());
            b.set_style(spinner_style());
            b.set_prefix(name.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress::new(name, bar, !self.quiet && self.multi.is_none())
    }

    pub fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:>14.cyan} {pos} items {per_sec} {elapsed_precise} {wide_msg}")
        .expect("template")
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("  {prefix:>14.cyan} [{bar:30}] {pos}/{len} {per_sec} ETA {eta} {wide_msg}")
        .expect("template")
        .progress_chars("=> ")
}

struct Inner {
    name: String,
    bar: Option<ProgressBar>,
    plain: bool,
    /// In the torch worker: report as JSON lines on stdout for the scheduler to draw.
    emit: bool,
    total: AtomicU64,
    done: AtomicU64,
    start: Instant,
    last_line: Mutex<Instant>,
}

/// A stage's handle on its progress bar; cheap to clone into worker threads.
#[derive(Clone)]
pub struct Progress(Arc<Inner>);

impl Progress {
    fn new(name: &str, bar: Option<ProgressBar>, plain: bool) -> Progress {
        let now = Instant::now();
        Progress(Arc::new(Inner {
            name: name.to_string(),
            bar,
            plain,
            emit: false,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            start: now,
            last_line: Mutex::new(now),
        }))
    }

    /// The worker's handle: every update becomes a [`crate::worker::Event`] line on stdout.
    pub fn emitting(name: &str) -> Progress {
        let mut p = Progress::new(name, None, false);
        Arc::get_mut(&mut p.0).expect("fresh").emit = true;
        p
    }

    /// A handle that shows nothing (tests, library use).
    pub fn hidden() -> Progress {
        Progress::new("", None, false)
    }

    /// Number of items the stage will process; turns the spinner into a bar with ETA.
    pub fn set_total(&self, total: u64) {
        self.0.total.store(total, Ordering::Relaxed);
        if self.0.emit {
            crate::worker::Event::Total(total).emit();
        }
        if let Some(b) = &self.0.bar {
            b.set_style(bar_style());
            b.set_length(total);
        }
    }

    pub fn inc(&self, n: u64) {
        let done = self.0.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(b) = &self.0.bar {
            b.inc(n);
        } else if self.0.emit {
            crate::worker::Event::Inc(n).emit();
        } else if self.0.plain {
            let mut last = self.0.last_line.lock().unwrap();
            if last.elapsed() >= PLAIN_EVERY {
                *last = Instant::now();
                let rate = done as f64 / self.0.start.elapsed().as_secs_f64().max(1e-9);
                let total = self.0.total.load(Ordering::Relaxed);
                let of = if total > 0 { format!("/{total}") } else { String::new() };
                eprintln!("[{}] {done}{of} items ({rate:.0}/s)", self.0.name);
            }
        }
    }

    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.0.bar {
            Some(b) => b.set_message(msg),
            None if self.0.emit => crate::worker::Event::Message(msg).emit(),
            None if self.0.plain => eprintln!("[{}] {msg}", self.0.name),
            None => {}
        }
    }

    pub fn position(&self) -> u64 {
        self.0.done.load(Ordering::Relaxed)
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0.bar {
            b.finish_and_clear();
        }
    }
}
