//! Project automation for tsr. Builds without libtorch: it is what installs it.
//!
//! `cargo xtask setup`          install/verify PyTorch 2.11.0 (libtorch) and link `.libtorch`
//! `cargo xtask test`           set-up, rustfmt check, clippy -D warnings, boundaries, all tests
//! `cargo xtask seed-model`     set-up, then the judge-tuned seed model (cached in the tsr home)
//! `cargo xtask run-iteration`  set-up, seed model, then one TSR iteration on the embedded default
//! `cargo xtask bench`          benchmarks against the Python references, measured in one run, one table
//! `cargo xtask gpu-check`      on a GPU machine: CUDA parity, decode and DPO against transformers/TRL
//! `cargo xtask reference`      the Python reference environment (transformers, TRL, gguf)
//! `cargo xtask engines`        the llama.cpp server (xllamacpp) and built-in GGUF for the engine tests
//! `cargo xtask reproduce`      the miniature reproduction of the TSR paper's claims (docs/reproduction.md)
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench_record;
mod gpu_check;
mod reproduce;
mod setup;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "tsr project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install or verify libtorch (PyTorch 2.11.0 from PyPI) and link it for cargo.
    Setup,
    /// Set up, then check formatting, clippy (warnings denied), crate boundaries and run all tests.
    Test {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, then build the judge-tuned seed model `smollm2-135m-judge` from SmolLM2-135M-Instruct
    /// (`tsr seed-model`; cached in the tsr home, about 13 minutes on 2 idle cores the first time).
    SeedModel {
        /// Extra arguments passed to `tsr seed-model`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up, build the seed model if needed, then run one TSR iteration starting from it with
    /// the built-in prompts.
    RunIteration {
        /// Extra arguments passed to `tsr iterate`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Set up (with the Python references), run the benchmarks (generation three times: f32 and
    /// tsr's weight-only bf16 and f16), then print one table of their headline figures against the references
    /// and goals, also written to `<target>/tsr-bench/summary.md`.
    Bench {
        /// Only this benchmark target: prefill, generate, judge_modes, dpo_train, logprob_memory,
        /// loss, parse.
        /// (Several benchmarks have their own harness and ignore name filters, so the choice is
        /// made by target.)
        filter: Option<String>,
    },
    /// On a machine with a GPU: set up, build tsr, then check it on CUDA against transformers and
    /// TRL (xtask/gpu_check.py): greedy parity (f32 must match, bf16 reported), batch-1 decode
    /// tokens/s and DPO seconds per step, printed as a table and written as JSON.
    GpuCheck(gpu_check::Options),
    /// Install the Python reference packages (transformers, trl, gguf) used for golden values,
    /// parity checks and benchmarks.
    Reference,
    /// Install the llama.cpp server wheel (xllamacpp) into the tsr cache and fetch the built-in
    /// GGUF, for the remote-engine tests of tsr-judge (`cargo xtask test` does this too).
    Engines,
    /// Set up, build the seed model if needed, then the miniature reproduction of the TSR paper's
    /// claims: SR x4, TSR x2, past-only x2, future-only x2 iterations for several seeds,
    /// evaluations, charts and docs/reproduction.md (about 90 minutes on 2 CPU cores).
    Reproduce(reproduce::Options),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let root = project_root();
    match cli.cmd {
        Cmd::Setup => {
            setup::libtorch(&root)?;
        }
        Cmd::Test { args } => test(&root, &args)?,
        Cmd::SeedModel { args } => {
            setup::libtorch(&root)?;
            let tsr = build_tsr(&root)?;
            seed_model(&tsr, &args)?;
        }
        Cmd::RunIteration { args } => run_iteration(&root, &args)?,
        Cmd::Bench { filter } => bench(&root, filter.as_deref())?,
        Cmd::GpuCheck(opts) => gpu_check::gpu_check(&root, &opts)?,
        Cmd::Reference => {
            setup::libtorch(&root)?;
            setup::reference(&root)?;
        }
        Cmd::Reproduce(opts) => {
            setup::libtorch(&root)?;
            let tsr = build_tsr(&root)?;
            if opts.model.is_none() {
                seed_model(&tsr, &[])?;
            }
            reproduce::reproduce(&root, &tsr, &opts)?;
        }
        Cmd::Engines => {
            let env = setup::engines()?;
            println!(
                "xtask engines: TSR_ENGINE_PYTHON={} TSR_ENGINE_GGUF={}",
                env.python.display(),
                env.gguf.display()
            );
        }
    }
    Ok(())
}

/// The workspace root (the parent of this crate's folder). `cargo run` sets CARGO_MANIFEST_DIR
/// at run time too; it wins over the compile-time value because one xtask binary in a target
/// folder shared by several checkouts (CI's cache) may have been built from another checkout.
fn project_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The crates that must never depend on libtorch.
const TORCH_FREE: &[&str] = &["tsr-judge", "tsr-curate", "tsr-loop"];

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let t0 = Instant::now();
    setup::libtorch(root)?;
    step(
        "rustfmt",
        cargo(root).args(["fmt", "--all", "--", "--check"]),
    )?;
    check_boundaries(root)?;
    step(
        "clippy",
        cargo(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    let mut t = cargo(root);
    t.args(["test", "--workspace"]);
    // The llama.cpp server tests of tsr-judge (crates/tsr-judge/tests/it/engine.rs).
    if std::env::var("TSR_SKIP_ENGINE_TESTS").as_deref() == Ok("1") {
        println!("xtask: TSR_SKIP_ENGINE_TESTS=1: not installing the engine, its tests skip");
    } else {
        let env = setup::engines()?;
        t.env("TSR_ENGINE_PYTHON", &env.python)
            .env("TSR_ENGINE_GGUF", &env.gguf);
    }
    // The TRL command-trainer test (tests/e2e/trainer.rs) runs the reference environment's TRL.
    if std::env::var("TSR_SKIP_REFERENCE_TESTS").as_deref() == Ok("1") {
        println!("xtask: TSR_SKIP_REFERENCE_TESTS=1: the TRL trainer test skips");
    } else {
        let python = setup::reference(root).context(
            "installing the Python reference packages for the TRL trainer test (set \
             TSR_SKIP_REFERENCE_TESTS=1 to skip that test)",
        )?;
        t.env("TSR_REFERENCE_PYTHON", &python);
    }
    if !extra.is_empty() {
        t.arg("--").args(extra);
    }
    step("tests", &mut t)?;
    // tsr-dpo used from a crate outside the workspace (its own model through `Policy`); it shares
    // the workspace's target folder so the libtorch bindings are not built twice.
    let mut ext = cargo(root);
    ext.args(["run", "--quiet", "--manifest-path"])
        .arg(root.join("tests/external-dpo/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir(root));
    step(
        "external crate using tsr-dpo (tests/external-dpo)",
        &mut ext,
    )?;
    println!("xtask test: all checks passed in {:.0?}", t0.elapsed());
    Ok(())
}

fn check_boundaries(root: &Path) -> Result<()> {
    for krate in TORCH_FREE {
        let out = cargo(root)
            .args([
                "tree",
                "--package",
                krate,
                "--edges",
                "normal,build",
                "--prefix",
                "none",
                "--format",
                "{p}",
            ])
            .output()
            .with_context(|| format!("running cargo tree for {krate}"))?;
        if !out.status.success() {
            bail!(
                "cargo tree -p {krate} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        if let Some(line) = tree
            .lines()
            .find(|l| l.starts_with("tch ") || l.starts_with("torch-sys "))
        {
            bail!("boundary violated: {krate} depends on libtorch ({line}); see ARCHITECTURE.md");
        }
    }
    println!(
        "xtask: boundaries hold ({} are free of tch)",
        TORCH_FREE.join(", ")
    );
    Ok(())
}

/// Builds the `tsr` binary; returns its path.
fn build_tsr(root: &Path) -> Result<PathBuf> {
    step(
        "build tsr",
        cargo(root).args(["build", "--package", "tsr-cli"]),
    )?;
    Ok(target_dir(root).join("debug").join("tsr"))
}

/// `tsr seed-model` (a no-op when the cached seed model has the same recipe).
fn seed_model(tsr: &Path, extra: &[String]) -> Result<()> {
    step(
        "tsr seed-model",
        Command::new(tsr).arg("seed-model").args(extra),
    )
}

fn run_iteration(root: &Path, extra: &[String]) -> Result<()> {
    setup::libtorch(root)?;
    let exe = build_tsr(root)?;
    seed_model(&exe, &[])?;
    let run_dir = root.join("runs").join("default");
    let mut cmd = Command::new(&exe);
    cmd.args(["iterate", "--default", "--run-dir"])
        .arg(&run_dir)
        .args(extra);
    step("tsr iterate (embedded default)", &mut cmd)
}

fn bench(root: &Path, filter: Option<&str>) -> Result<()> {
    setup::libtorch(root)?;
    let python = setup::reference(root)?;
    // The llama.cpp server of the `engine` benchmark.
    let engines = setup::engines()?;
    let out_dir = target_dir(root).join("tsr-bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let results = out_dir.join("results.jsonl");
    if results.exists() {
        std::fs::remove_file(&results)
            .with_context(|| format!("removing the last run's {}", results.display()))?;
    }
    let bench_cmd = || {
        let mut cmd = cargo(root);
        cmd.args(["bench", "--workspace", "--profile", "dev"])
            .env("TSR_REFERENCE_PYTHON", &python)
            .env("TSR_ENGINE_PYTHON", &engines.python)
            .env(bench_record::RESULTS_ENV, &results);
        cmd
    };
    let mut cmd = bench_cmd();
    if let Some(f) = filter {
        cmd.args(["--bench", f]);
    }
    let mut outcome = step("benchmarks", &mut cmd);
    // Generation again with tsr's weight-only formats (transformers has no such mode: it runs
    // f32), without the per-step profile, so that the table holds every format.
    if filter.is_none_or(|f| f == "generate") {
        for format in ["bf16-weights", "f16-weights"] {
            if outcome.is_ok() {
                let mut cmd = bench_cmd();
                cmd.args(["--bench", "generate"])
                    .env("TSR_BENCH_DTYPE", format)
                    .env("TSR_BENCH_PROFILE", "0");
                outcome = step(&format!("generate with {format}"), &mut cmd);
            }
        }
    }
    summarize(root, &python, &results, &out_dir.join("summary.md"))?;
    outcome
}

/// Prints the figures the benchmarks recorded as one markdown table, headed by the machine and
/// the versions, and writes it to `summary`.
fn summarize(root: &Path, python: &Path, results: &Path, summary: &Path) -> Result<()> {
    let text = std::fs::read_to_string(results).unwrap_or_default();
    let figures = bench_record::read(&text).map_err(anyhow::Error::msg)?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_owned())
    };
    let cpu = field("model name").unwrap_or_else(|| "unknown CPU".into());
    // Native bf16 arithmetic changes which products tsr's weight-only bf16 serves.
    let bf16 = if field("flags").is_some_and(|f| f.split(' ').any(|x| x == "avx512_bf16")) {
        "native bf16 (AVX512-BF16)"
    } else {
        "no native bf16"
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let versions = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m\n\
             print(', '.join(f'{p} {m.version(p)}' for p in ('torch', 'transformers', 'trl')))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "reference versions unknown".into());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let doc = format!(
        "# tsr benchmarks, one run\n\n\
         {cpu}, {cores} cores, {bf16}; reference: {versions}; tsr at {commit}.\n\
         Ratios are tsr / reference, both measured in this run (docs/benchmarks.md says how).\n\n{}",
        if figures.is_empty() {
            "No figures were recorded.\n".to_owned()
        } else {
            bench_record::render(&figures)
        }
    );
    println!("\n{doc}");
    std::fs::write(summary, &doc).with_context(|| format!("writing {}", summary.display()))?;
    println!("xtask bench: the table is in {}", summary.display());
    Ok(())
}

/// The cargo target folder (honours `CARGO_TARGET_DIR`).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

fn cargo(root: &Path) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root);
    c
}

/// Run a command, echo it, and fail with its name when it fails.
pub(crate) fn step(name: &str, cmd: &mut Command) -> Result<()> {
    let t0 = Instant::now();
    println!("xtask: {name}: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    println!("xtask: {name}: ok in {:.1?}", t0.elapsed());
    Ok(())
}
