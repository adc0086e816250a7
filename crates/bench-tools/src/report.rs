//! Statistics and the result table (plain text for the terminal, markdown
//! for the README).

use std::time::Duration;

/// Median of unsorted samples (mean of the two middle ones for even n).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile of unsorted samples.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Latency summary in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Lat {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Lat {
    pub fn of(samples_ms: &[f64]) -> Lat {
        Lat {
            p50: percentile(samples_ms, 50.0),
            p99: percentile(samples_ms, 99.0),
            max: samples_ms.iter().copied().fold(f64::NAN, f64::max),
        }
    }

    pub fn text(&self) -> String {
        format!("p50 {} / p99 {} ms", fmt_ms(self.p50), fmt_ms(self.p99))
    }
}

pub fn fmt_ms(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v < 1.0 {
        format!("{v:.3}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

pub fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

#[derive(Clone, Debug)]
pub enum Verdict {
    Pass,
    /// Missed, and by how much.
    Miss(String),
    /// Informational: no target.
    Info,
    Skip(String),
}

#[derive(Clone, Debug)]
pub struct Row {
    pub id: String,
    pub what: String,
    pub ours: String,
    pub base: String,
    pub ratio: Option<f64>,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    pub fn new(id: &str, what: impl Into<String>) -> Row {
        Row {
            id: id.into(),
            what: what.into(),
            ours: String::new(),
            base: String::new(),
            ratio: None,
            target: "-".into(),
            verdict: Verdict::Info,
        }
    }
    pub fn ours(mut self, s: impl Into<String>) -> Row {
        self.ours = s.into();
        self
    }
    pub fn base(mut self, s: impl Into<String>) -> Row {
        self.base = s.into();
        self
    }
    pub fn ratio(mut self, r: f64) -> Row {
        self.ratio = Some(r);
        self
    }
    pub fn target(mut self, s: impl Into<String>) -> Row {
        self.target = s.into();
        self
    }
    pub fn verdict(mut self, v: Verdict) -> Row {
        self.verdict = v;
        self
    }
    /// PASS when `ok`, else MISS with `by`.
    pub fn check(self, ok: bool, by: impl Into<String>) -> Row {
        let v = if ok {
            Verdict::Pass
        } else {
            Verdict::Miss(by.into())
        };
        self.verdict(v)
    }

    fn result_text(&self) -> String {
        match &self.verdict {
            Verdict::Pass => "PASS".into(),
            Verdict::Miss(by) => format!("MISS: {by}"),
            Verdict::Info => "info".into(),
            Verdict::Skip(why) => format!("SKIP: {why}"),
        }
    }

    fn cells(&self) -> [String; 7] {
        [
            self.id.clone(),
            self.what.clone(),
            self.ours.clone(),
            self.base.clone(),
            self.ratio.map(fmt_ratio).unwrap_or_else(|| "-".into()),
            self.target.clone(),
            self.result_text(),
        ]
    }
}

const HEADER: [&str; 7] = [
    "#",
    "measurement",
    "ours",
    "baseline",
    "ratio",
    "target",
    "result",
];

pub fn print_table(rows: &[Row]) -> String {
    let cells: Vec<[String; 7]> = rows.iter().map(Row::cells).collect();
    let mut width = HEADER.map(|h| h.chars().count());
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            width[i] = width[i].max(s.chars().count());
        }
    }
    let line = |c: &[String; 7]| {
        let mut s = String::new();
        for (i, cell) in c.iter().enumerate() {
            if i > 0 {
                s.push_str(" | ");
            }
            let pad = width[i] - cell.chars().count();
            s.push_str(cell);
            if i + 1 < c.len() {
                s.push_str(&" ".repeat(pad));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&HEADER.map(String::from));
    let total: usize = width.iter().sum::<usize>() + 3 * (width.len() - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for c in &cells {
        out.push_str(&line(c));
    }
    out
}

impl Row {
    pub fn has_target(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::Pass | Verdict::Miss(_) | Verdict::Skip(_)
        )
    }
}

pub fn markdown_table(rows: &[Row]) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = format!("| {} |\n", HEADER.join(" | "));
    out.push_str("|---|---|---:|---:|---:|---|---|\n");
    for r in rows {
        let c = r.cells();
        out.push_str(&format!(
            "| {} |\n",
            c.iter().map(|s| esc(s)).collect::<Vec<_>>().join(" | ")
        ));
    }
    out
}
