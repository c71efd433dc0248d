//! The figures of one `cargo xtask bench` run, collected into one table.
//!
//! Each benchmark that compares tsr with a reference calls [`record`] for its headline figures;
//! when `TSR_BENCH_RESULTS` names a file (xtask sets it), a JSON line is appended there.
//! `cargo xtask bench` then reads the lines back and prints them with [`render`]. This file is
//! compiled into xtask and, through `#[path]`, into the benchmarks, so both sides share one
//! format; it uses only std and serde_json.
#![allow(dead_code)]

use std::io::Write;

/// The environment variable naming the JSON-lines file the benchmarks append to.
pub const RESULTS_ENV: &str = "TSR_BENCH_RESULTS";

/// Whether a goal is a floor or a ceiling on `tsr / reference`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    /// No goal: the figure is measured and reported.
    None,
    /// The ratio should be at least this.
    AtLeast(f64),
    /// The ratio should be at most this.
    AtMost(f64),
}

/// One headline figure: tsr's value, the reference's, and the goal on their ratio.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// The benchmark target (`generate`, `dpo_train`, ...).
    pub bench: String,
    /// What was measured, e.g. `sampled 2x7x128, T 0.7, top_p 0.9 (f32)`.
    pub figure: String,
    /// The unit of both values (`tok/s`, `MB`).
    pub unit: String,
    pub tsr: f64,
    /// The reference's name (`transformers`, `TRL, same batches`, `llama.cpp Q4_1`).
    pub reference: String,
    pub reference_value: Option<f64>,
    pub goal: Goal,
}

impl Figure {
    /// `tsr / reference`, when the reference ran.
    pub fn ratio(&self) -> Option<f64> {
        self.reference_value
            .filter(|r| *r > 0.0)
            .map(|r| self.tsr / r)
    }

    /// Whether the goal is met: `None` without a goal or a reference value.
    pub fn met(&self) -> Option<bool> {
        let ratio = self.ratio()?;
        match self.goal {
            Goal::None => None,
            Goal::AtLeast(g) => Some(ratio >= g),
            Goal::AtMost(g) => Some(ratio <= g),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let (op, value) = match self.goal {
            Goal::None => (None, None),
            Goal::AtLeast(g) => (Some(">="), Some(g)),
            Goal::AtMost(g) => (Some("<="), Some(g)),
        };
        serde_json::json!({
            "bench": self.bench,
            "figure": self.figure,
            "unit": self.unit,
            "tsr": self.tsr,
            "reference": self.reference,
            "reference_value": self.reference_value,
            "goal_op": op,
            "goal": value,
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Result<Figure, String> {
        let text = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("bench result without a string {k:?}: {v}"))
        };
        let goal = match (v["goal_op"].as_str(), v["goal"].as_f64()) {
            (None, _) => Goal::None,
            (Some(">="), Some(g)) => Goal::AtLeast(g),
            (Some("<="), Some(g)) => Goal::AtMost(g),
            _ => return Err(format!("bench result with a malformed goal: {v}")),
        };
        Ok(Figure {
            bench: text("bench")?,
            figure: text("figure")?,
            unit: text("unit")?,
            tsr: v["tsr"]
                .as_f64()
                .ok_or_else(|| format!("bench result without a number \"tsr\": {v}"))?,
            reference: text("reference")?,
            reference_value: v["reference_value"].as_f64(),
            goal,
        })
    }
}

/// Appends `figure` to the file named by `TSR_BENCH_RESULTS`; does nothing when it is unset
/// (a benchmark run on its own prints its figures anyway). A write error is reported on stderr
/// and does not stop the benchmark.
pub fn record(figure: &Figure) {
    let Some(path) = std::env::var_os(RESULTS_ENV) else {
        return;
    };
    let line = format!("{}\n", figure.to_json());
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "bench: could not append to {RESULTS_ENV}={}: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
}

/// Reads the figures a run recorded (JSON lines).
pub fn read(text: &str) -> Result<Vec<Figure>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).map_err(|e| format!("bench result {l:?}: {e}"))?;
            Figure::from_json(&v)
        })
        .collect()
}

fn number(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// A markdown table of the figures, in the order recorded.
pub fn render(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| benchmark | figure | tsr | reference | tsr / reference | goal | met |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let reference = match f.reference_value {
            Some(r) => format!("{} {} ({})", number(r), f.unit, f.reference),
            None => format!("not run ({})", f.reference),
        };
        let ratio = f.ratio().map_or("-".into(), |r| format!("{r:.2}x"));
        let goal = match f.goal {
            Goal::None => "-".into(),
            Goal::AtLeast(g) => format!(">= {g}x"),
            Goal::AtMost(g) => format!("<= {g}x"),
        };
        let met = match f.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        out.push_str(&format!(
            "| {} | {} | {} {} | {reference} | {ratio} | {goal} | {met} |\n",
            f.bench,
            f.figure,
            number(f.tsr),
            f.unit
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(tsr: f64, reference: Option<f64>, goal: Goal) -> Figure {
        Figure {
            bench: "generate".into(),
            figure: "greedy 1x128".into(),
            unit: "tok/s".into(),
            tsr,
            reference: "transformers".into(),
            reference_value: reference,
            goal,
        }
    }

    #[test]
    fn goals_are_judged_on_the_ratio_in_their_direction() {
        assert_eq!(fig(30.0, Some(10.0), Goal::AtLeast(2.5)).met(), Some(true));
        assert_eq!(fig(20.0, Some(10.0), Goal::AtLeast(2.5)).met(), Some(false));
        assert_eq!(
            fig(3300.0, Some(6400.0), Goal::AtMost(0.5)).met(),
            Some(false)
        );
        assert_eq!(
            fig(3100.0, Some(6400.0), Goal::AtMost(0.5)).met(),
            Some(true)
        );
        assert_eq!(fig(30.0, None, Goal::AtLeast(2.5)).met(), None);
        assert_eq!(fig(30.0, Some(10.0), Goal::None).met(), None);
    }

    #[test]
    fn figures_survive_the_json_lines_round_trip_and_render_one_row_each() {
        let figures = vec![
            fig(37.1, Some(16.9), Goal::AtLeast(2.5)),
            fig(3326.0, Some(6393.0), Goal::AtMost(0.5)),
            fig(120.0, None, Goal::None),
        ];
        let text: String = figures
            .iter()
            .map(|f| format!("{}\n", f.to_json()))
            .collect();
        assert_eq!(read(&text).unwrap(), figures);
        let table = render(&figures);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 2 + 3);
        assert_eq!(
            rows[2],
            "| generate | greedy 1x128 | 37.1 tok/s | 16.9 tok/s (transformers) | 2.20x | >= 2.5x | **no** |"
        );
        assert_eq!(
            rows[3],
            "| generate | greedy 1x128 | 3326 tok/s | 6393 tok/s (transformers) | 0.52x | <= 0.5x | **no** |"
        );
        assert_eq!(
            rows[4],
            "| generate | greedy 1x128 | 120 tok/s | not run (transformers) | - | - | - |"
        );
    }

    #[test]
    fn a_malformed_line_is_an_error_naming_it() {
        let err = read("{\"bench\": \"x\"}\n").unwrap_err();
        assert!(err.contains("figure"), "{err}");
        assert!(read("not json\n").unwrap_err().contains("not json"));
    }
}
