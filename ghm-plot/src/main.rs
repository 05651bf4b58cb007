//! `ghm-plot`: draws a ghm training log (one JSON line per batch and loss, as `ghm_log_stats`
//! writes them) as one SVG or PNG figure: the density of the gradient norm `g` per bin for a
//! few iterations (the paper's Fig. 1), the harmonizing weights, the whole run as a heatmap,
//! and each bin's gradient contribution under CE, focal loss and GHM-C (the paper's Fig. 2).
//!
//! ```text
//! ghm-plot LOG [-o OUT.svg|OUT.png] [--tag TAG] [--iters N,N,...] [--size WxH]
//! ```

mod log;
mod plot;

use std::path::PathBuf;
use std::process::ExitCode;

use plotters::prelude::*;
use plotters::style::FontStyle;

const USAGE: &str = "\
usage: ghm-plot LOG [-o OUT] [--tag TAG] [--iters N,N,...] [--size WxH]

Draws a ghm training log (one JSON line per batch and loss, as ghm_log_stats writes them).
  LOG          the log file (`-` for standard input)
  -o OUT       the figure: .svg or .png (default ghm-density.svg)
  --tag TAG    which loss of the log to draw (default: the first line's tag)
  --iters LIST the iterations of the per-iteration charts (default: first, middle, last)
  --size WxH   the figure's size in pixels (default 1400x1000)
Text needs a TrueType font: the first of GHM_PLOT_FONT and the usual system places
(DejaVu Sans, Liberation Sans, Arial...).";

/// Where TrueType fonts usually are, in order of preference.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

struct Args {
    log: String,
    out: PathBuf,
    tag: Option<String>,
    iters: Option<Vec<u64>>,
    size: (u32, u32),
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut log = None;
    let mut a = Args {
        log: String::new(),
        out: PathBuf::from("ghm-density.svg"),
        tag: None,
        iters: None,
        size: (1400, 1000),
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "-o" | "--output" => a.out = PathBuf::from(value("-o")?),
            "--tag" => a.tag = Some(value("--tag")?),
            "--iters" => {
                let v = value("--iters")?;
                let list = v
                    .split(',')
                    .map(|s| s.trim().parse::<u64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| format!("--iters {v}: not a list of iteration numbers"))?;
                if list.is_empty() || list.len() > plot::ITER_COLORS.len() {
                    return Err(format!(
                        "--iters takes 1 to {} iterations",
                        plot::ITER_COLORS.len()
                    ));
                }
                a.iters = Some(list);
            }
            "--size" => {
                let v = value("--size")?;
                let (w, h) = v
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                    .filter(|&(w, h): &(u32, u32)| {
                        (400..=10000).contains(&w) && (300..=10000).contains(&h)
                    })
                    .ok_or(format!("--size {v}: not WxH within 400x300 to 10000x10000"))?;
                a.size = (w, h);
            }
            s if s.starts_with('-') && s != "-" => return Err(format!("unknown option {s}")),
            _ if log.is_some() => return Err(format!("a second log file: {arg}")),
            _ => log = Some(arg),
        }
    }
    a.log = log.ok_or("no log file given")?;
    Ok(a)
}

/// Registers the first TrueType font found as plotters' "sans-serif".
fn load_font() -> Result<PathBuf, String> {
    let env = std::env::var_os("GHM_PLOT_FONT").map(PathBuf::from);
    let candidates = env.iter().cloned().chain(FONTS.iter().map(PathBuf::from));
    for path in candidates {
        let Ok(bytes) = std::fs::read(&path) else {
            if env.as_ref() == Some(&path) {
                return Err(format!("GHM_PLOT_FONT={}: cannot be read", path.display()));
            }
            continue;
        };
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
            return Ok(path);
        }
        if env.as_ref() == Some(&path) {
            return Err(format!(
                "GHM_PLOT_FONT={}: not a TrueType font",
                path.display()
            ));
        }
    }
    Err(format!(
        "no TrueType font found for the labels (looked at {}); install one (e.g. the \
         fonts-dejavu-core package) or set GHM_PLOT_FONT to a .ttf file",
        FONTS.join(", ")
    ))
}

fn run(a: Args) -> Result<(), String> {
    let records = if a.log == "-" {
        log::read(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&a.log).map_err(|e| format!("{}: {e}", a.log))?;
        log::read(std::io::BufReader::new(f))
    }
    .map_err(|e| format!("{}: {e}", a.log))?;
    let tag = a.tag.clone().unwrap_or_else(|| records[0].tag.clone());
    let run: Vec<&log::Record> = records.iter().filter(|r| r.tag == tag).collect();
    if run.is_empty() {
        let mut tags: Vec<&str> = records.iter().map(|r| r.tag.as_str()).collect();
        tags.sort_unstable();
        tags.dedup();
        return Err(format!(
            "{}: no line has the tag \"{tag}\" (tags: {tags:?})",
            a.log
        ));
    }
    if let Some(r) = run
        .iter()
        .find(|r| r.bins() != run[0].bins() || r.g_max != run[0].g_max)
    {
        return Err(format!(
            "{}: the lines of \"{tag}\" change their bins or g_max (iteration {})",
            a.log, r.iter
        ));
    }
    let picks = match &a.iters {
        None => {
            let mut p = vec![0, run.len() / 2, run.len() - 1];
            p.dedup();
            p
        }
        Some(list) => list
            .iter()
            .map(|&i| {
                run.iter()
                    .position(|r| r.iter == i)
                    .ok_or(format!("{}: \"{tag}\" has no iteration {i}", a.log))
            })
            .collect::<Result<_, _>>()?,
    };
    load_font()?;
    let ext = a
        .out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("svg") => {
            let root = SVGBackend::new(&a.out, a.size).into_drawing_area();
            plot::figure(&root, &run, &picks, &tag)?;
        }
        Some("png") => {
            let root = BitMapBackend::new(&a.out, a.size).into_drawing_area();
            plot::figure(&root, &run, &picks, &tag)?;
        }
        _ => {
            return Err(format!(
                "{}: the output must end in .svg or .png",
                a.out.display()
            ))
        }
    }
    let iters: Vec<u64> = picks.iter().map(|&p| run[p].iter).collect();
    println!(
        "{}: \"{tag}\", {} lines, iterations {iters:?} in detail",
        a.out.display(),
        run.len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let a = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ghm-plot: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ghm-plot: {e}");
            ExitCode::FAILURE
        }
    }
}
