//! Progress for long commands (`sync`, `restore`, `verify`, `gc`): an
//! indicatif bar on a terminal, a plain line every 5 s (and at the end)
//! when stderr is not a terminal, nothing with `--quiet`/`--json`.

use parking_lot::Mutex;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

type Line = Box<dyn Fn(u64, u64, &str) -> String + Send + Sync>;
/// When the last plain line was printed, and the current message.
type LineState = Mutex<(Option<Instant>, String, Option<(u64, u64)>)>;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    /// Plain lines: the text for (done, total, message), and when the last was printed.
    plain: Option<(Line, LineState)>,
}

impl Progress {
    /// `template` styles the bar (indicatif syntax); `line` words a plain
    /// line from (done, total, the last message).
    pub fn new(
        quiet: bool,
        template: &str,
        line: impl Fn(u64, u64, &str) -> String + Send + Sync + 'static,
    ) -> Progress {
        if quiet {
            return Progress {
                bar: None,
                plain: None,
            };
        }
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            Progress {
                bar: Some(bar),
                plain: None,
            }
        } else {
            Progress {
                bar: None,
                plain: Some((Box::new(line), Mutex::new((None, String::new(), None)))),
            }
        }
    }

    /// A message shown next to the bar (`{msg}`) and passed to plain lines.
    pub fn set_message(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        } else if let Some((_, state)) = &self.plain {
            state.lock().1 = msg;
        }
    }

    pub fn update(&self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        } else if let Some((line, state)) = &self.plain {
            let mut st = state.lock();
            // Every 5 s while something moves; an unchanged line is not
            // repeated (a stalled sync printed "0 of N uploaded" 17 times).
            let changed = st.2 != Some((done, total));
            let due = st.0.is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
            if changed && (due || done >= total) {
                eprintln!("{}", line(done, total, &st.1));
                st.0 = Some(Instant::now());
                st.2 = Some((done, total));
            }
        }
    }

    /// A line of its own above the bar (or on stderr without one).
    pub fn println(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// "1.50 MiB (1572864 B)": binary units with the exact count.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {} ({n} B)", UNITS[u])
    }
}
