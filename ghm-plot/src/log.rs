//! Reading a training log: one JSON object per line, as `ghm_log_stats` (C) or
//! `ghm::log::LogLine` (Rust) writes them (schema version 1).

use std::fmt;
use std::io::{BufRead, IsTerminal, Write};

use serde_json::Value;

/// One line of the log: one batch of one loss (its tag).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub iter: u64,
    pub tag: String,
    pub g_max: f64,
    /// `bins + 1` edges over `[0, g_max]`.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
    pub weights: Vec<f64>,
    pub nonempty: u64,
    pub tot: Option<f64>,
    pub skipped: u64,
    pub loss: Option<f64>,
}

impl Record {
    pub fn bins(&self) -> usize {
        self.counts.len()
    }

    /// The centre of bin `k`.
    pub fn centre(&self, k: usize) -> f64 {
        (self.edges[k] + self.edges[k + 1]) / 2.0
    }
}

/// A line that is not a log record: its number (from 1) and what is wrong with it.
#[derive(Debug, PartialEq)]
pub struct LogError {
    pub line: usize,
    pub what: String,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.what)
        } else {
            write!(f, "line {}: {}", self.line, self.what)
        }
    }
}

fn field<'a>(o: &'a serde_json::Map<String, Value>, k: &str) -> Result<&'a Value, String> {
    o.get(k).ok_or_else(|| format!("no \"{k}\" field"))
}

fn uint(o: &serde_json::Map<String, Value>, k: &str) -> Result<u64, String> {
    field(o, k)?
        .as_u64()
        .ok_or_else(|| format!("\"{k}\" is not a non-negative integer"))
}

/// A number, or `None` for `null` (a non-finite value).
fn num(o: &serde_json::Map<String, Value>, k: &str) -> Result<Option<f64>, String> {
    match field(o, k)? {
        Value::Null => Ok(None),
        v => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("\"{k}\" is not a number")),
    }
}

fn array<'a>(
    o: &'a serde_json::Map<String, Value>,
    k: &str,
    len: usize,
) -> Result<&'a [Value], String> {
    let a = field(o, k)?
        .as_array()
        .ok_or_else(|| format!("\"{k}\" is not an array"))?;
    if a.len() != len {
        return Err(format!("\"{k}\" has {} entries, not {len}", a.len()));
    }
    Ok(a)
}

/// One line of the log as a [`Record`].
pub fn parse_line(text: &str) -> Result<Record, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let o = v.as_object().ok_or("not a JSON object")?;
    let version = uint(o, "v")?;
    if version != 1 {
        return Err(format!(
            "schema version {version}; this ghm-plot reads version 1"
        ));
    }
    let bins = uint(o, "bins")? as usize;
    if !(1..=128).contains(&bins) {
        return Err(format!("\"bins\" is {bins}, not in 1..=128"));
    }
    let g_max = num(o, "g_max")?
        .filter(|g| *g > 0.0)
        .ok_or("\"g_max\" is not a positive number")?;
    let edges = array(o, "edges", bins + 1)?
        .iter()
        .map(|e| {
            e.as_f64()
                .ok_or("\"edges\" holds a value that is not a number")
        })
        .collect::<Result<Vec<_>, _>>()?;
    if edges.windows(2).any(|w| w[0] >= w[1]) {
        return Err("\"edges\" are not increasing".into());
    }
    let counts = array(o, "counts", bins)?
        .iter()
        .map(|c| {
            c.as_u64()
                .ok_or("\"counts\" holds a value that is not a non-negative integer")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let weights = array(o, "weights", bins)?
        .iter()
        .map(|w| match w {
            Value::Null => Ok(0.0),
            w => w
                .as_f64()
                .filter(|w| *w >= 0.0)
                .ok_or("\"weights\" holds a value that is not a non-negative number"),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tag = field(o, "tag")?
        .as_str()
        .ok_or("\"tag\" is not a string")?
        .to_string();
    Ok(Record {
        iter: uint(o, "iter")?,
        tag,
        g_max,
        edges,
        counts,
        weights,
        nonempty: uint(o, "nonempty")?,
        tot: num(o, "tot")?,
        skipped: uint(o, "skipped")?,
        loss: num(o, "loss")?,
    })
}

/// Logs longer than this many lines get a progress bar on stderr.
pub const PROGRESS_FROM: usize = 4000;

/// A progress bar on stderr: redrawn in place on a terminal, one line per tenth otherwise.
struct Progress {
    total: usize,
    shown: usize,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Option<Progress> {
        (total > PROGRESS_FROM).then(|| Progress {
            total,
            shown: usize::MAX,
            tty: std::io::stderr().is_terminal(),
        })
    }

    fn update(&mut self, done: usize) {
        let tenth = done * 10 / self.total;
        let step = if self.tty {
            done * 50 / self.total
        } else {
            tenth
        };
        if step == self.shown {
            return;
        }
        self.shown = step;
        let bar = done * 30 / self.total;
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "{}reading the log [{}{}] {:3}% ({done}/{} lines){}",
            if self.tty { "\r" } else { "" },
            "#".repeat(bar),
            " ".repeat(30 - bar),
            done * 100 / self.total,
            self.total,
            if self.tty && done < self.total {
                ""
            } else {
                "\n"
            },
        );
    }
}

/// Every record of a log, in order. Blank lines are skipped; anything else that is not a
/// record is an error naming its line. An empty log is an error too.
pub fn read(input: impl BufRead) -> Result<Vec<Record>, LogError> {
    let lines: Vec<String> = input
        .lines()
        .enumerate()
        .map(|(i, l)| {
            l.map_err(|e| LogError {
                line: i + 1,
                what: format!("cannot be read: {e}"),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut progress = Progress::new(lines.len());
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        if !l.trim().is_empty() {
            out.push(parse_line(l).map_err(|what| LogError { line: i + 1, what })?);
        }
        if let Some(p) = progress.as_mut() {
            p.update(i + 1);
        }
    }
    if out.is_empty() {
        return Err(LogError {
            line: 0,
            what: "the log holds no records (no non-blank line)".into(),
        });
    }
    Ok(out)
}
