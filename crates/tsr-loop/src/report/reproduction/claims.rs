//! The paper's claims, the fixed rule that decides each ([`CLAIMS`]), and their verdicts.

use super::equal_compute::EQUAL_COMPUTE;
use super::method::Method;
use super::stats::mean;
use super::winrate::win_text;
use std::collections::BTreeMap;
use tsr_judge::winrate::WinRateReport;

/// The outcome of one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The criterion held.
    Reproduced,
    /// The criterion did not hold.
    NotReproduced,
    /// The data show the opposite of the claim (a significant difference the other way).
    Contradicted,
    /// The runs lack what the criterion needs (e.g. no SR run with two iterations).
    NoData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reproduced => "reproduced",
            Self::NotReproduced => "not reproduced",
            Self::Contradicted => "contradicted",
            Self::NoData => "no data",
        }
    }
}

/// One claim of the paper, the rule that decides it here, and what was measured.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Claim {
    pub claim: &'static str,
    pub criterion: &'static str,
    pub measured: String,
    pub verdict: Verdict,
}

/// The claims and their fixed criteria, in the order of the report.
pub const CLAIMS: [(&str, &str); 5] = [
    (
        "(a1) Under SR the score gap between chosen and rejected collapses over iterations",
        "SR's mean gap at its last iteration is at most half its mean gap at iteration 1, and \
         it fell in every seed",
    ),
    (
        "(a2) Under SR the chosen and rejected hidden states grow more similar",
        "SR's mean cosine at its last iteration is above iteration 1's, and it rose in every \
         seed",
    ),
    (
        "(a3) Under TSR the gap holds",
        "TSR's mean gap at iteration 2 is at least 0.8 x its iteration-1 gap and at least SR's \
         mean gap at iteration 2",
    ),
    (
        "(b) TSR after 2 iterations beats SR after 4 at about the same compute",
        "the pooled head-to-head win rate of TSR's final model over SR's (fixed judge, both \
         orders, every seed) is above 0.5 with its 95% interval above 0.5 (below 0.5 with the \
         interval below 0.5: contradicted); the compute ratio is reported beside it",
    ),
    (
        "(b2) TSR's final model beats SR's at equal measured compute",
        "as (b), against SR's model at the iteration whose cumulative compute (tokens generated \
         + judged + trained) is nearest TSR's final model's, per seed (SR continued past 4 \
         iterations while its next iteration would land nearer)",
    ),
];

pub(super) fn gap_claim(sr: Option<&Method<'_>>) -> (String, Verdict) {
    let Some(sr) = sr.filter(|m| m.last() >= 2) else {
        return ("no SR run with two iterations".into(), Verdict::NoData);
    };
    let last = sr.last();
    let ends = sr.ends(|i| i.gap, last);
    let (first, end): (Vec<f64>, Vec<f64>) = ends.iter().copied().unzip();
    let (Some(f), Some(e)) = (mean(&first), mean(&end)) else {
        return ("SR runs without score gaps".into(), Verdict::NoData);
    };
    let per_seed: Vec<String> = ends.iter().map(|(a, b)| format!("{a:.3}→{b:.3}")).collect();
    let every = ends.iter().all(|(a, b)| b < a);
    let text = format!(
        "mean gap {f:.3} at iteration 1, {e:.3} at iteration {last} (ratio {}); per seed {}",
        ratio(e, f),
        per_seed.join(", ")
    );
    let ok = f > 0.0 && e <= 0.5 * f && every;
    (
        text,
        if ok {
            Verdict::Reproduced
        } else {
            Verdict::NotReproduced
        },
    )
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "undefined".into()
    } else {
        format!("{:.2}", a / b)
    }
}

pub(super) fn similarity_claim(sr: Option<&Method<'_>>) -> (String, Verdict) {
    let Some(sr) = sr.filter(|m| m.last() >= 2) else {
        return ("no SR run with two iterations".into(), Verdict::NoData);
    };
    let last = sr.last();
    let ends = sr.ends(|i| i.similarity, last);
    let (first, end): (Vec<f64>, Vec<f64>) = ends.iter().copied().unzip();
    let (Some(f), Some(e)) = (mean(&first), mean(&end)) else {
        return ("SR runs without similarity".into(), Verdict::NoData);
    };
    let per_seed: Vec<String> = ends.iter().map(|(a, b)| format!("{a:.4}→{b:.4}")).collect();
    let ok = e > f && ends.iter().all(|(a, b)| b > a);
    (
        format!(
            "mean cosine {f:.4} at iteration 1, {e:.4} at iteration {last}; per seed {}",
            per_seed.join(", ")
        ),
        if ok {
            Verdict::Reproduced
        } else {
            Verdict::NotReproduced
        },
    )
}

pub(super) fn holds_claim(sr: Option<&Method<'_>>, tsr: Option<&Method<'_>>) -> (String, Verdict) {
    let (Some(sr), Some(tsr)) = (sr, tsr) else {
        return ("needs SR and TSR runs".into(), Verdict::NoData);
    };
    if sr.last() < 2 || tsr.last() < 2 {
        return (
            "needs SR and TSR runs with two iterations".into(),
            Verdict::NoData,
        );
    }
    let (Some(t1), Some(t2), Some(s2)) = (
        mean(&tsr.at(1, |i| i.gap)),
        mean(&tsr.at(2, |i| i.gap)),
        mean(&sr.at(2, |i| i.gap)),
    ) else {
        return ("runs without score gaps".into(), Verdict::NoData);
    };
    let ok = t2 >= 0.8 * t1 && t2 >= s2;
    (
        format!(
            "TSR mean gap {t1:.3} at iteration 1, {t2:.3} at iteration 2 (ratio {}); SR's at \
             iteration 2: {s2:.3}",
            ratio(t2, t1)
        ),
        if ok {
            Verdict::Reproduced
        } else {
            Verdict::NotReproduced
        },
    )
}

fn total_tokens(m: &Method<'_>) -> Vec<f64> {
    let last = m.last();
    m.at(last, |i| i.cumulative_tokens)
}

fn win_verdict(r: &WinRateReport) -> Verdict {
    match (r.win_rate, r.ci_low, r.ci_high) {
        (Some(w), Some(lo), _) if w > 0.5 && lo > 0.5 => Verdict::Reproduced,
        (Some(w), _, Some(hi)) if w < 0.5 && hi < 0.5 => Verdict::Contradicted,
        (Some(_), _, _) => Verdict::NotReproduced,
        _ => Verdict::NoData,
    }
}

pub(super) fn beats_claim(
    pooled: &BTreeMap<(String, String), WinRateReport>,
    sr: Option<&Method<'_>>,
    tsr: Option<&Method<'_>>,
) -> (String, Verdict) {
    let Some(r) = pooled.get(&("tsr".to_string(), "sr".to_string())) else {
        return ("no head-to-head of TSR against SR".into(), Verdict::NoData);
    };
    let compute = match (sr.map(total_tokens), tsr.map(total_tokens)) {
        (Some(s), Some(t)) => match (mean(&s), mean(&t)) {
            (Some(s), Some(t)) => format!(
                "; compute (tokens generated + judged + trained): TSR {t:.0}, SR {s:.0}, ratio {}",
                ratio(t, s)
            ),
            _ => String::new(),
        },
        _ => String::new(),
    };
    (
        format!("TSR over SR: {}{compute}", win_text(r)),
        win_verdict(r),
    )
}

pub(super) fn equal_compute_claim(
    pooled: &BTreeMap<(String, String), WinRateReport>,
    matched: &[(u64, Option<u32>)],
    sr: Option<&Method<'_>>,
    tsr: Option<&Method<'_>>,
) -> (String, Verdict) {
    let key = ("tsr".to_string(), EQUAL_COMPUTE.to_string());
    let Some(r) = pooled.get(&key) else {
        return (
            "no head-to-head of TSR against SR at equal compute".into(),
            Verdict::NoData,
        );
    };
    let mut per_seed = Vec::new();
    for &(seed, it) in matched {
        let of = |m: Option<&Method<'_>>, it: u32| {
            m.and_then(|m| m.runs.get(&seed))
                .and_then(|r| r.iterations.iter().find(|i| i.iteration == it))
                .and_then(|i| i.cumulative_tokens)
        };
        let t_last = tsr.map_or(0, Method::last);
        match (it, of(tsr, t_last)) {
            (Some(it), Some(t)) => match of(sr, it) {
                Some(s) => per_seed.push(format!(
                    "seed {seed}: SR iteration {it}, TSR/SR compute {}",
                    ratio(t, s)
                )),
                None => per_seed.push(format!("seed {seed}: SR iteration {it}")),
            },
            _ => per_seed.push(format!("seed {seed}: –")),
        }
    }
    (
        format!("TSR over SR: {}; {}", win_text(r), per_seed.join(", ")),
        win_verdict(r),
    )
}
