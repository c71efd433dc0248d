//! How the report is drawn: the x-axis of the per-iteration charts ([`XAxis`]) and the chart
//! sizes and title ([`ReportOptions`]).

use super::chart::XKind;
use super::data::Iteration;

/// What the x-axis of the per-iteration charts measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum XAxis {
    /// [`XAxis::Iteration`] for one run, [`XAxis::Tokens`] for several.
    #[default]
    Auto,
    /// The iteration number.
    Iteration,
    /// Cumulative tokens generated + judged + trained (the `eval` stage excluded).
    Tokens,
    /// Cumulative wall seconds of the iterations (sum of `compute.wall_s`, `eval` excluded).
    WallSeconds,
}

impl XAxis {
    /// The accepted spellings, for help texts.
    pub const NAMES: &'static str = "auto, iteration, tokens, wall";

    pub(super) fn resolve(self, runs: usize) -> Self {
        match self {
            Self::Auto if runs > 1 => Self::Tokens,
            Self::Auto => Self::Iteration,
            other => other,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Tokens => "cumulative tokens (generated + judged + trained; eval excluded)",
            Self::WallSeconds => "cumulative wall time (s; eval excluded)",
            _ => "iteration",
        }
    }

    pub(super) fn kind(self) -> XKind {
        match self {
            Self::Tokens => XKind::Count,
            Self::WallSeconds => XKind::Seconds,
            _ => XKind::Integer,
        }
    }

    pub(super) fn value(self, it: &Iteration) -> Option<f64> {
        match self {
            Self::Tokens => it.cumulative_tokens,
            Self::WallSeconds => it.cumulative_wall_s,
            _ => Some(f64::from(it.iteration)),
        }
    }
}

impl std::str::FromStr for XAxis {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "iteration" | "iterations" => Ok(Self::Iteration),
            "tokens" => Ok(Self::Tokens),
            "wall" | "wall_s" | "seconds" => Ok(Self::WallSeconds),
            _ => Err(format!("unknown x-axis `{s}` (expected {})", Self::NAMES)),
        }
    }
}

/// How the report is drawn.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReportOptions {
    /// The x-axis of the per-iteration charts.
    pub x_axis: XAxis,
    /// Width of every chart, pixels.
    pub width: u32,
    /// Height of one panel, pixels; a chart of `k` stacked panels is `k` times as tall.
    pub panel_height: u32,
    /// Title of `report.md`; default `tsr report: RUN, RUN`.
    pub title: Option<String>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            x_axis: XAxis::Auto,
            width: 960,
            panel_height: 440,
            title: None,
        }
    }
}
