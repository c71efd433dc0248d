//! Head-to-head records: reading `records.jsonl` and the text of a win-rate tally.

use crate::error::{LoopError, Result};
use crate::fsio;
use serde_json::Value;
use std::path::Path;
use tsr_judge::winrate::{WinRateRecord, WinRateReport};

pub(super) fn read_records(path: &Path) -> Result<Vec<WinRateRecord>> {
    let rows: Vec<Value> = fsio::read_jsonl(path)?;
    rows.into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| LoopError::Record {
                path: path.to_path_buf(),
                message: format!("record {}: {e}", i + 1),
            })
        })
        .collect()
}

pub(super) fn win_text(r: &WinRateReport) -> String {
    match (r.win_rate, r.ci_low, r.ci_high) {
        (Some(w), Some(lo), Some(hi)) => format!(
            "{w:.3} [{lo:.3}, {hi:.3}] ({}-{}-{} of {})",
            r.wins, r.losses, r.ties, r.n
        ),
        _ => format!("– (0 of {} scored)", r.prompts),
    }
}
