//! Progress output of a run.
//!
//! On a terminal: one line per running stage that fits the width — name, bar, count,
//! rate (2–3 significant digits), ETA from the recent rate, and the stage's own message
//! (epoch, loss) cut to what is left — under an overall line. Without a terminal (CI,
//! Slurm logs, `| tee`): the scheduler's start and end lines, and at most one line per
//! stage every [`PLAIN_EVERY`] with the count, rate, ETA and latest message, so a log
//! stays short however many steps a stage takes.
//!
//! A stage reports through [`Progress`]: `set_total`, `inc`, `set_message`. Where the
//! updates go is the handle's sink: a bar, plain lines, nothing, or a function (the torch
//! worker sends them to `pipe` as JSON lines, see [`crate::worker`]).

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Minimum time between two plain progress lines of one stage (`PIPE_PROGRESS_EVERY`
/// seconds overrides it).
pub const PLAIN_EVERY: Duration = Duration::from_secs(15);

/// How often a bar's text is recomputed: often enough to look live, rarely enough that
/// a stage calling `inc` a million times pays nothing for it.
const DRAW_EVERY: Duration = Duration::from_millis(150);

/// The window of the rate an ETA is computed from: recent enough to follow a stage that
/// speeds up (LibTorch loading, a cold cache), long enough to be steady.
const RATE_WINDOW: Duration = Duration::from_secs(20);

/// Width of a stage's name column.
const NAME_WIDTH: usize = 14;
const BAR_WIDTH: usize = 20;

/// One update a stage makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Total(u64),
    Inc(u64),
    Message(String),
}

/// Owns the terminal for one command.
pub struct Reporter {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    quiet: bool,
    every: Duration,
}

impl Reporter {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new(quiet: bool) -> Reporter {
        let every = std::env::var("PIPE_PROGRESS_EVERY")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(PLAIN_EVERY, Duration::from_secs_f64);
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
                every,
            }
        } else {
            Reporter {
                multi: None,
                overall: None,
                quiet,
                every,
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
        if let Some(m) = &self.multi {
            let b = m.add(ProgressBar::new_spinner());
            // The bar itself is drawn into the message (`Progress::draw`), so that its
            // width can give way to the count and ETA on a narrow terminal.
            b.set_style(ProgressStyle::with_template("{spinner} {prefix:.cyan} {msg}").expect("template"));
            b.set_prefix(if terminal_width() >= 80 {
                format!("{name:>NAME_WIDTH$}")
            } else {
                name.to_string()
            });
            b.enable_steady_tick(Duration::from_millis(120));
            return Progress::new(name, Sink::Bar(b));
        }
        if self.quiet {
            return Progress::hidden();
        }
        Progress::new(
            name,
            Sink::Plain {
                every: self.every,
                out: Box::new(|line: &str| eprintln!("{line}")),
            },
        )
    }

    pub fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
    }
}

type LineOut = Box<dyn Fn(&str) + Send + Sync>;

enum Sink {
    Hidden,
    Bar(ProgressBar),
    Plain { every: Duration, out: LineOut },
    Func(Box<dyn Fn(Update) + Send + Sync>),
}

struct Shown {
    message: String,
    /// (when, done) samples of the last [`RATE_WINDOW`].
    samples: VecDeque<(Instant, u64)>,
    last_draw: Option<Instant>,
    last_line: Instant,
}

struct Inner {
    name: String,
    sink: Sink,
    total: AtomicU64,
    done: AtomicU64,
    start: Instant,
    shown: Mutex<Shown>,
}

/// A stage's handle on its progress; cheap to clone into worker threads.
#[derive(Clone)]
pub struct Progress(Arc<Inner>);

impl Progress {
    fn new(name: &str, sink: Sink) -> Progress {
        let now = Instant::now();
        Progress(Arc::new(Inner {
            name: name.to_string(),
            sink,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            start: now,
            shown: Mutex::new(Shown {
                message: String::new(),
                samples: VecDeque::from([(now, 0)]),
                last_draw: None,
                last_line: now,
            }),
        }))
    }

    /// A handle that hands every update to `f` (the torch worker's: JSON lines).
    pub fn with_sink(name: &str, f: impl Fn(Update) + Send + Sync + 'static) -> Progress {
        Progress::new(name, Sink::Func(Box::new(f)))
    }

    /// Plain lines to `out`, at most one every `every` (what a log without a terminal
    /// gets; for tests).
    pub fn plain(name: &str, every: Duration, out: impl Fn(&str) + Send + Sync + 'static) -> Progress {
        Progress::new(
            name,
            Sink::Plain {
                every,
                out: Box::new(out),
            },
        )
    }

    /// A handle that shows nothing (tests, library use).
    pub fn hidden() -> Progress {
        Progress::new("", Sink::Hidden)
    }

    /// Number of items the stage will process; turns the spinner into a bar with ETA.
    pub fn set_total(&self, total: u64) {
        self.0.total.store(total, Ordering::Relaxed);
        match &self.0.sink {
            Sink::Func(f) => f(Update::Total(total)),
            Sink::Bar(_) => self.draw(true),
            _ => {}
        }
    }

    pub fn inc(&self, n: u64) {
        self.0.done.fetch_add(n, Ordering::Relaxed);
        match &self.0.sink {
            Sink::Func(f) => f(Update::Inc(n)),
            Sink::Bar(_) => self.draw(false),
            Sink::Plain { .. } => self.draw(false),
            Sink::Hidden => {}
        }
    }

    /// The stage's own words (epoch, loss, what it is doing); shown after the count.
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if let Sink::Func(f) = &self.0.sink {
            return f(Update::Message(msg));
        }
        self.0.shown.lock().unwrap().message = msg;
        self.draw(false);
    }

    pub fn position(&self) -> u64 {
        self.0.done.load(Ordering::Relaxed)
    }

    pub fn finish(&self) {
        if let Sink::Bar(b) = &self.0.sink {
            b.finish_and_clear();
        }
    }

    /// Redraw the bar's text or write a plain line, when it is time to.
    fn draw(&self, now_anyway: bool) {
        let now = Instant::now();
        let mut shown = self.0.shown.lock().unwrap();
        let done = self.position();
        let due = match &self.0.sink {
            Sink::Bar(_) => now_anyway || shown.last_draw.is_none_or(|t| now - t >= DRAW_EVERY),
            Sink::Plain { every, .. } => now - shown.last_line >= *every,
            _ => false,
        };
        if !due {
            return;
        }
        // The rate over the recent window: the newest sample against the oldest one
        // still inside it.
        if shown
            .samples
            .back()
            .is_none_or(|&(t, _)| now - t >= Duration::from_millis(250))
        {
            shown.samples.push_back((now, done));
        }
        while shown.samples.len() > 2 && shown.samples.front().is_some_and(|&(t, _)| now - t > RATE_WINDOW) {
            shown.samples.pop_front();
        }
        let (t0, d0) = *shown.samples.front().expect("one sample");
        let secs = (now - t0).as_secs_f64();
        let rate = if secs > 0.2 && done > d0 {
            Some((done - d0) as f64 / secs)
        } else {
            None
        };
        let total = self.0.total.load(Ordering::Relaxed);
        let status = status_text(done, total, rate, now - self.0.start);
        match &self.0.sink {
            Sink::Bar(b) => {
                shown.last_draw = Some(now);
                // Spinner, name, spaces: what the style adds before the message.
                let room = terminal_width().saturating_sub(2 + b.prefix().chars().count() + 2);
                b.set_message(bar_line(done, total, &status, &shown.message, room));
            }
            Sink::Plain { out, .. } => {
                shown.last_line = now;
                let msg = if shown.message.is_empty() {
                    String::new()
                } else {
                    format!(" · {}", shown.message)
                };
                out(&format!("[{}] {status}{msg}", self.0.name));
            }
            _ => {}
        }
    }
}

/// `120/432 (28%) 9.4/s ETA 33s`, or `1,204 items 310/s 0:04` without a total.
pub fn status_text(done: u64, total: u64, rate: Option<f64>, elapsed: Duration) -> String {
    let rate_s = rate.map(|r| format!(" {}/s", sig3(r))).unwrap_or_default();
    if total == 0 {
        return format!("{done} items{rate_s} {}", clock(elapsed));
    }
    let pct = (done as f64 / total as f64 * 100.0).min(100.0);
    let eta = match rate {
        Some(r) if done < total => format!(" ETA {}", clock(Duration::from_secs_f64((total - done) as f64 / r))),
        _ => String::new(),
    };
    format!("{done}/{total} ({pct:.0}%){rate_s}{eta}")
}

/// A rate with 2–3 significant digits: 0.0123, 1.23, 12.3, 123, 1230.
pub fn sig3(x: f64) -> String {
    if !x.is_finite() || x <= 0.0 {
        return "0".into();
    }
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        let digits = (-x.log10()).floor() as usize + 3;
        format!("{x:.digits$}")
    }
}

/// 42s, 3m05s, 1h02m.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `[=====>    ] status · message` in `room` characters: the status whole if it fits,
/// the bar as wide as what is left allows (up to [`BAR_WIDTH`], left out below 5), the
/// message cut last.
fn bar_line(done: u64, total: u64, status: &str, message: &str, room: usize) -> String {
    let status_len = status.chars().count();
    let bar_inner = room.saturating_sub(status_len + 3).min(BAR_WIDTH);
    let bar = if total > 0 && bar_inner >= 5 {
        let filled = ((done.min(total) as f64 / total as f64) * bar_inner as f64) as usize;
        let head = if filled < bar_inner { ">" } else { "" };
        let rest = bar_inner - filled - head.len();
        format!("[{}{head}{}] ", "=".repeat(filled), " ".repeat(rest))
    } else {
        String::new()
    };
    let left = room.saturating_sub(bar.chars().count());
    format!("{bar}{}", fit(status, message, left))
}

/// `status` then as much of `message` as fits in `room` characters.
fn fit(status: &str, message: &str, room: usize) -> String {
    let mut line = status.chars().take(room).collect::<String>();
    let used = line.chars().count();
    if !message.is_empty() && used + 3 < room {
        let left = room - used - 3;
        let n = message.chars().count();
        line.push_str(" · ");
        if n <= left {
            line.push_str(message);
        } else {
            line.extend(message.chars().take(left.saturating_sub(1)));
            line.push('…');
        }
    }
    line
}

/// Columns of the terminal on stderr (80 when it cannot be told).
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize; nothing else is touched.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 { ws.ws_col as usize } else { 80 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(sig3(1234.5), "1234");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(1.2345), "1.23");
        assert_eq!(sig3(0.012345), "0.0123");
        assert_eq!(clock(Duration::from_secs(46)), "46s");
        assert_eq!(clock(Duration::from_secs(185)), "3m05s");
        assert_eq!(clock(Duration::from_secs(3720)), "1h02m");
        assert_eq!(
            status_text(120, 432, Some(9.4), Duration::from_secs(13)),
            "120/432 (28%) 9.40/s ETA 33s"
        );
    }

    #[test]
    fn the_bar_gives_way_to_the_count() {
        let status = "240/252 (95%) 190/s ETA 0s";
        let wide = bar_line(240, 252, status, "epoch 12/12 loss 0.41", 80);
        assert!(wide.starts_with("[===================>] 240/252"), "{wide}");
        assert!(wide.ends_with("epoch 12/12 loss 0.41"), "{wide}");
        let narrow = bar_line(240, 252, status, "epoch 12/12 loss 0.41", 36);
        assert!(narrow.chars().count() <= 36 && narrow.contains("ETA 0s"), "{narrow}");
        let tiny = bar_line(240, 252, status, "epoch", 28);
        assert_eq!(tiny, status);
    }

    #[test]
    fn a_line_fits_its_room() {
        let line = fit(
            "120/432 (28%) 9.40/s ETA 33s",
            "epoch 3/12 loss 0.4123 val F1 0.812",
            40,
        );
        assert_eq!(line.chars().count(), 40);
        assert!(line.ends_with('…'));
        assert_eq!(fit("1/2 (50%)", "", 40), "1/2 (50%)");
    }

    /// A long stage without a terminal writes a bounded number of lines, however many
    /// steps and messages it has (the paper's settings: tens of thousands of steps).
    #[test]
    fn plain_lines_are_bounded() {
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let every = Duration::from_millis(100);
        let p = Progress::plain("train", every, move |l| sink.lock().unwrap().push(l.to_string()));
        let start = Instant::now();
        p.set_total(200_000);
        for step in 0..200_000u64 {
            p.inc(1);
            if step % 10 == 0 {
                p.set_message(format!("epoch {} loss {:.3}", step / 1000, 1.0 / (step + 1) as f64));
            }
            if step % 20_000 == 0 {
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        let elapsed = start.elapsed();
        let lines = lines.lock().unwrap();
        let bound = (elapsed.as_secs_f64() / every.as_secs_f64()).ceil() as usize + 1;
        assert!(
            lines.len() <= bound,
            "{} lines in {elapsed:?} (at most {bound}): {lines:?}",
            lines.len()
        );
        assert!(!lines.is_empty(), "no progress line at all in {elapsed:?}");
        assert!(
            lines.iter().all(|l| l.starts_with("[train] ") && l.contains('/')),
            "{lines:?}"
        );
    }
}
