//! `cargo xtask reproduce`: the miniature reproduction of the TSR paper's claims
//! (docs/reproduction.md).
//!
//! From one seed model, SR (4 iterations), TSR (2), past-only (2) and future-only (2) run on the
//! same prompt chunks for every seed, each with an `[eval]` section that compares every new model
//! with `M_0` under a fixed judge. Then the final models meet head to head (TSR against each other
//! method, same judge, both orders), every final model and `M_0` are measured as judges on
//! labelled pairs (`tsr judge-eval`), optionally GSM8K accuracy, and `tsr_loop::report` writes the
//! charts and the markdown. Every step is skipped when its output exists, so an interrupted
//! reproduction resumes where it stopped (a run folder resumes with `tsr iterate --resume`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tsr_loop::report::reproduction::{
    cumulative_compute, equal_compute_iteration, reproduction_report, Accuracy, EqualCompute,
    HeadToHead, ReproRun, ReproductionInput, Verdict, EQUAL_COMPUTE,
};
use tsr_loop::report::{write_report, ReportOptions, XAxis};

/// The methods in the order they run, with the iterations the comparison uses.
pub const METHODS: [(&str, u32); 4] = [("sr", 4), ("tsr", 2), ("past-only", 2), ("future-only", 2)];

/// The most iterations SR is continued to for the equal-compute comparison.
const SR_MAX_ITERATIONS: u32 = 12;

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Seeds per method (0, 1, ...).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Scale knob: prompts per iteration = 8 x SCALE (the prompt file is cycled when it runs out;
    /// give a larger one with --configs for fresh prompts).
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
    /// Folder of the config set: sr.toml, tsr.toml, past-only.toml, future-only.toml and their
    /// prompt file.
    #[arg(long, default_value = "docs/examples/reproduction")]
    pub configs: PathBuf,
    /// Where the runs and evaluations go.
    #[arg(long, default_value = "runs/reproduction")]
    pub out: PathBuf,
    /// Override the seed model `M_0` of every config (built-in name, Hugging Face folder, .gguf).
    /// Without it the configs' model is used, and the built-in seed model is built if needed.
    #[arg(long)]
    pub model: Option<String>,
    /// Fixed judge of the head-to-head comparisons and of the configs' `[eval]` (default: the
    /// configs' `eval.judge`).
    #[arg(long)]
    pub judge: Option<String>,
    /// Device of every step: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Labelled pairs per kind for the judge-accuracy measurement (0: skip it).
    #[arg(long, default_value_t = 16)]
    pub judge_pairs: usize,
    /// GSM8K test problems for a greedy accuracy of M_0 and every final model (0: skip; about
    /// 15 s per problem on 2 CPU cores).
    #[arg(long, default_value_t = 0)]
    pub gsm8k: usize,
    /// A TOML file whose `[backend]` table is added to every run's config: sampling and judging
    /// on OpenAI-compatible servers, DPO by an external trainer (see docs/scaling.md).
    #[arg(long)]
    pub backend: Option<PathBuf>,
    /// The markdown report (charts go to `images/reproduction/` beside it). Default:
    /// docs/reproduction.md for the default configs at scale 1, else OUT/reproduction.md.
    #[arg(long)]
    pub doc: Option<PathBuf>,
}

fn abs(root: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

/// The config of one run: the method's file with the seed, the scale and the overrides applied,
/// and the prompt paths made absolute (the copy lives in OUT/configs).
fn run_config(
    configs: &Path,
    method: &str,
    seed: u64,
    o: &Options,
    backend: Option<&toml::Table>,
) -> Result<String> {
    let path = configs.join(format!("{method}.toml"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let table = |doc: &mut toml::Table, name: &str| -> Result<toml::Table> {
        match doc.remove(name) {
            Some(toml::Value::Table(t)) => Ok(t),
            None => Ok(toml::Table::new()),
            Some(_) => bail!("{}: [{name}] is not a table", path.display()),
        }
    };
    let mut run = table(&mut doc, "run")?;
    run.insert("seed".into(), toml::Value::Integer(seed as i64));
    if let Some(m) = &o.model {
        run.insert("model".into(), toml::Value::String(m.clone()));
    }
    let prompts = run
        .get("prompts")
        .and_then(toml::Value::as_str)
        .unwrap_or("prompts.jsonl")
        .to_string();
    run.insert(
        "prompts".into(),
        toml::Value::String(configs.join(prompts).display().to_string()),
    );
    let mut lp = table(&mut doc, "loop")?;
    let per = lp
        .get("prompts_per_iteration")
        .and_then(toml::Value::as_integer)
        .unwrap_or(8);
    lp.insert(
        "prompts_per_iteration".into(),
        toml::Value::Integer(per * i64::from(o.scale)),
    );
    let mut eval = table(&mut doc, "eval")?;
    if let Some(j) = &o.judge {
        eval.insert("judge".into(), toml::Value::String(j.clone()));
    }
    if let Some(p) = eval.get("prompts").and_then(toml::Value::as_str) {
        let p = configs.join(p).display().to_string();
        eval.insert("prompts".into(), toml::Value::String(p));
    }
    doc.insert("run".into(), run.into());
    doc.insert("loop".into(), lp.into());
    if !eval.is_empty() {
        doc.insert("eval".into(), eval.into());
    }
    if let Some(b) = backend {
        doc.insert("backend".into(), b.clone().into());
    }
    Ok(format!(
        "# Written by `cargo xtask reproduce` from {} (seed {seed}, scale {}).\n{}",
        path.display(),
        o.scale,
        toml::to_string(&doc)?
    ))
}

/// The `[eval]` judge of the TSR config (or --judge).
fn eval_judge(configs: &Path, o: &Options) -> Result<String> {
    if let Some(j) = &o.judge {
        return Ok(j.clone());
    }
    let path = configs.join("tsr.toml");
    let doc: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?)?;
    doc.get("eval")
        .and_then(|e| e.get("judge"))
        .and_then(toml::Value::as_str)
        .map(str::to_string)
        .with_context(|| {
            format!(
                "{}: no [eval] judge (the reproduction needs one)",
                path.display()
            )
        })
}

/// The seed model of the TSR config (or --model).
fn seed_model_name(configs: &Path, o: &Options) -> Result<String> {
    if let Some(m) = &o.model {
        return Ok(m.clone());
    }
    let path = configs.join("tsr.toml");
    let doc: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?)?;
    Ok(doc
        .get("run")
        .and_then(|r| r.get("model"))
        .and_then(toml::Value::as_str)
        .unwrap_or("smollm2-135m-instruct")
        .to_string())
}

fn run_step(name: &str, cmd: &mut Command) -> Result<()> {
    crate::step(name, cmd)
}

/// The `[backend]` table of `--backend FILE`.
fn backend_table(path: &Path) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    match doc.remove("backend") {
        Some(toml::Value::Table(t)) => Ok(t),
        _ => bail!("{}: no [backend] table", path.display()),
    }
}

/// The last finished iteration of a run folder (from `summary.json`; 0 without one).
fn last_iteration(dir: &Path) -> Result<u32> {
    let path = dir.join("summary.json");
    if !path.is_file() {
        return Ok(0);
    }
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    v["iterations"]
        .as_array()
        .and_then(|a| a.iter().filter_map(|i| i["iteration"].as_u64()).max())
        .map_or(Ok(0), |i| Ok(i as u32))
}

/// Run `tsr iterate` on a run folder up to `iterations` (a new run, or a resume).
fn iterate(
    tsr: &Path,
    dir: &Path,
    cfg: &Path,
    text: Option<String>,
    iterations: u32,
    device: &str,
    label: &str,
) -> Result<()> {
    let mut cmd = Command::new(tsr);
    if dir.join("run.json").exists() {
        cmd.args(["iterate", "--resume"]).arg(dir);
    } else {
        let text = text.context("a new run needs its config")?;
        std::fs::write(cfg, text)?;
        cmd.args(["iterate", "--config"])
            .arg(cfg)
            .arg("--run-dir")
            .arg(dir);
    }
    cmd.args(["--iterations", &iterations.to_string()])
        .args(["--device", device]);
    run_step(label, &mut cmd)
}

pub fn reproduce(root: &Path, tsr: &Path, o: &Options) -> Result<()> {
    let t0 = Instant::now();
    let configs = abs(root, &o.configs);
    let out = abs(root, &o.out);
    std::fs::create_dir_all(out.join("configs"))?;
    let judge = eval_judge(&configs, o)?;
    let m0 = seed_model_name(&configs, o)?;
    let device = ["--device", o.device.as_str()];

    // 1. The runs.
    let backend = o.backend.as_deref().map(backend_table).transpose()?;
    let mut runs = Vec::new();
    for seed in 0..o.seeds {
        for (method, iterations) in METHODS {
            let name = format!("{method}-seed{seed}");
            let dir = out.join(&name);
            let cfg = out.join("configs").join(format!("{name}.toml"));
            // A run that got this far (SR may have been continued further) is not shortened.
            if last_iteration(&dir)? < iterations {
                let text = run_config(&configs, method, seed, o, backend.as_ref())?;
                let label = format!(
                    "{name} ({:.0} min so far)",
                    t0.elapsed().as_secs_f64() / 60.0
                );
                iterate(tsr, &dir, &cfg, Some(text), iterations, &o.device, &label)?;
            }
            runs.push(ReproRun {
                method: method.to_string(),
                seed,
                dir,
                iterations,
            });
        }
    }

    // 2. Head to head: TSR's final model against each other method's, per seed, and against
    // SR's model at the iteration nearest in compute to TSR's final one (SR is continued past
    // its 4 iterations while the next one is expected to land nearer).
    let mut head_to_head = Vec::new();
    let answers_of = |r: &ReproRun, iteration: u32| -> Result<PathBuf> {
        let answers = r
            .dir
            .join("eval")
            .join(format!("answers-iter-{iteration:03}-model.jsonl"));
        anyhow::ensure!(
            answers.is_file(),
            "{}: no eval answers of iteration {iteration} (is [eval] in the config?)",
            answers.display()
        );
        Ok(answers)
    };
    for seed in 0..o.seeds {
        let of = |m: &str| {
            runs.iter()
                .find(|r| r.seed == seed && r.method == m)
                .unwrap()
        };
        let tsr_run = of("tsr");
        let tsr_answers = answers_of(tsr_run, tsr_run.iterations)?;
        let sr_run = of("sr");
        let target = cumulative_compute(&tsr_run.dir)?
            .into_iter()
            .find(|(i, _)| *i == tsr_run.iterations)
            .map(|(_, t)| t)
            .context("TSR's final iteration has no compute in its summary")?;
        let matched = loop {
            let sr_compute = cumulative_compute(&sr_run.dir)?;
            match equal_compute_iteration(&sr_compute, target, SR_MAX_ITERATIONS) {
                Some(EqualCompute::Use(it)) => break it,
                Some(EqualCompute::Continue) => {
                    let next = sr_compute.last().map_or(1, |l| l.0 + 1);
                    let cfg = out.join("configs").join(format!("sr-seed{seed}.toml"));
                    let label = format!(
                        "sr-seed{seed}: iteration {next} for the equal-compute comparison \
                         ({:.0} min so far)",
                        t0.elapsed().as_secs_f64() / 60.0
                    );
                    iterate(tsr, &sr_run.dir, &cfg, None, next, &o.device, &label)?;
                }
                None => bail!("{}: no iteration with compute", sr_run.dir.display()),
            }
        };
        let mut baselines: Vec<(String, String, PathBuf, Option<u32>)> = METHODS
            .iter()
            .filter(|(m, _)| *m != "tsr")
            .map(|(m, _)| {
                let r = of(m);
                Ok((
                    m.to_string(),
                    m.to_string(),
                    answers_of(r, r.iterations)?,
                    None,
                ))
            })
            .collect::<Result<_>>()?;
        baselines.push((
            EQUAL_COMPUTE.to_string(),
            "sr-equal-compute".to_string(),
            answers_of(sr_run, matched)?,
            Some(matched),
        ));
        for (label, stem, other_answers, baseline_iteration) in baselines {
            // The equal-compute folder names its SR iteration, so a changed match is re-judged.
            let dir = out.join("eval").join(match baseline_iteration {
                Some(it) => format!("seed{seed}-tsr-vs-{stem}-iter{it}"),
                None => format!("seed{seed}-tsr-vs-{stem}"),
            });
            if !dir.join("result.json").is_file() {
                let mut cmd = Command::new(tsr);
                cmd.args(["eval", "winrate", "--answers"])
                    .arg(&tsr_answers)
                    .arg("--baseline-answers")
                    .arg(&other_answers)
                    .arg("--prompts")
                    .arg(tsr_run.dir.join("eval-prompts.jsonl"))
                    .args(["--judge-model", &judge, "--judge-mode", "direct"])
                    .args(["--seed", &seed.to_string()])
                    .arg("--out")
                    .arg(&dir)
                    .args(device);
                run_step(&format!("seed {seed}: TSR vs {label}"), &mut cmd)?;
            }
            head_to_head.push(HeadToHead {
                seed,
                model: "tsr".into(),
                baseline: label,
                baseline_iteration,
                records: dir.join("records.jsonl"),
            });
        }
    }

    // 3. Judge accuracy (and GSM8K) of M_0 and of every final model.
    let mut models: Vec<(String, Option<u64>, String)> = vec![("m0".into(), None, m0.clone())];
    for r in &runs {
        let model = r.dir.join(format!("iter-{:03}/model", r.iterations));
        models.push((r.method.clone(), Some(r.seed), model.display().to_string()));
    }
    let mut accuracy = Vec::new();
    let mut gsm = Vec::new();
    for (label, seed, model) in &models {
        let stem = match seed {
            Some(s) => format!("{label}-seed{s}"),
            None => label.clone(),
        };
        if o.judge_pairs > 0 {
            let report = out.join("eval").join(format!("judge-accuracy-{stem}.json"));
            if !report.is_file() {
                let mut cmd = Command::new(tsr);
                cmd.args(["judge-eval", "--model", model])
                    .args(["--mode", "direct", "--template", "short"])
                    .args(["--per-kind", &o.judge_pairs.to_string()])
                    .arg("--out")
                    .arg(&report)
                    .args(device);
                run_step(&format!("judge accuracy of {stem}"), &mut cmd)?;
            }
            accuracy.push(Accuracy {
                model: label.clone(),
                seed: *seed,
                report,
            });
        }
        if o.gsm8k > 0 {
            let dir = out.join("eval").join(format!("gsm8k-{stem}"));
            if !dir.join("result.json").is_file() {
                let mut cmd = Command::new(tsr);
                cmd.args(["eval", "gsm8k", "--model", model])
                    .args(["--limit", &o.gsm8k.to_string(), "--samples", "0"])
                    .arg("--out")
                    .arg(&dir)
                    .args(device);
                run_step(&format!("GSM8K of {stem}"), &mut cmd)?;
            }
            gsm.push((stem, dir.join("result.json")));
        }
    }

    // 4. Charts and the markdown.
    let doc = match &o.doc {
        Some(d) => abs(root, d),
        None if o.scale == 1
            && o.model.is_none()
            && o.judge.is_none()
            && abs(root, &o.configs) == root.join("docs/examples/reproduction") =>
        {
            root.join("docs/reproduction.md")
        }
        None => out.join("reproduction.md"),
    };
    let doc_dir = doc.parent().context("--doc has no folder")?.to_path_buf();
    let images = doc_dir.join("images").join("reproduction");
    // One line per method: the charts draw the first seed's runs (with every seed's the charts
    // hold 4 x seeds lines per panel); the tables give means and spread over all seeds.
    let dirs: Vec<PathBuf> = runs
        .iter()
        .filter(|r| r.seed == 0)
        .map(|r| r.dir.clone())
        .collect();
    let mut opts = ReportOptions::default();
    opts.x_axis = XAxis::Tokens;
    let charts = write_report(&dirs, &images, &opts)?;
    // The charts' own report.md would duplicate the reproduction's tables.
    let _ = std::fs::remove_file(&charts.markdown);
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let input = ReproductionInput {
        title: "A miniature reproduction of the Temporal Self-Rewarding claims".into(),
        intro: intro(o, &m0, &judge, minutes, &gsm)?,
        runs,
        head_to_head,
        accuracy,
        charts: charts.charts,
        chart_prefix: "images/reproduction/".into(),
        outro: OUTRO.into(),
        display_root: Some(root.to_path_buf()),
    };
    let report = reproduction_report(&input)?;
    std::fs::write(&doc, &report.markdown).with_context(|| format!("writing {}", doc.display()))?;
    for c in &report.claims {
        println!("xtask reproduce: {} -> {}", c.claim, c.verdict.as_str());
    }
    let no_data = report
        .claims
        .iter()
        .filter(|c| c.verdict == Verdict::NoData)
        .count();
    println!(
        "xtask reproduce: {} written in {minutes:.1} min ({no_data} claim(s) without data)",
        doc.display()
    );
    Ok(())
}

fn intro(
    o: &Options,
    m0: &str,
    judge: &str,
    minutes: f64,
    gsm: &[(String, PathBuf)],
) -> Result<String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s =
        format!(
        "Generated by `cargo xtask reproduce` (seeds {}, scale {}, device {}) from the configs in \
         [`{}`]({}): SR for 4 iterations, TSR, past-only and future-only for 2, every method \
         starting from the same seed model `{m0}` and training on the same chunks of 8 x scale \
         prompts per iteration (in the default configs K = 4 responses, `direct` judge mode with tsr's short prompt, \
         DPO on the kept pairs). After every iteration the new model answers tsr's 24 built-in \
         held-out instructions greedily and a fixed judge that is not the policy (`{judge}`) \
         compares it with `M_0` in both orders; the final models meet head to head under the same \
         judge. For the equal-compute comparison (claim b2) SR is continued past its 4 iterations \
         while its next iteration is expected to land nearer TSR's final compute, and TSR's final \
         model meets SR's model at the iteration nearest in compute. This invocation took {minutes:.0} minutes on {cores} CPU cores (steps already done \
         are skipped, not timed; each run's own wall seconds are in the tables, and they vary with \
         the machine's other load). The charts draw seed 0's runs, one line per \
         method; the tables give means and spread over all seeds.\n\n\
         Rerun it with `cargo xtask reproduce`; `--scale N`, `--seeds N`, `--model`, `--judge`, \
         `--device cuda`, `--configs DIR` and `--backend FILE` (sampling and judging on \
         OpenAI-compatible servers, DPO by an external trainer) scale it up (see \
         [scaling.md](scaling.md)).\n",
        o.seeds,
        o.scale,
        o.device,
        o.configs.display(),
        o.configs.strip_prefix("docs").unwrap_or(&o.configs).display(),
    );
    if !gsm.is_empty() {
        s.push_str("\nGSM8K (greedy, exact-match on the final number):\n\n| model | accuracy |\n|---|---|\n");
        for (stem, path) in gsm {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)?;
            let acc = v
                .pointer("/greedy/report/accuracy")
                .and_then(serde_json::Value::as_f64);
            s.push_str(&format!(
                "| {stem} | {} |\n",
                acc.map_or("–".into(), |a| format!("{a:.3}"))
            ));
        }
    }
    Ok(s)
}

const OUTRO: &str = "## What this does and does not say\n\n\
The runs are miniatures of the paper's setting: a 135M-parameter model instead of Llama-3.1-8B, \
8 prompts per iteration instead of thousands, 48-token answers, 4 DPO steps per model, a judge \
that reads one score digit's probabilities, and a fixed judge of the same 135M size for the win \
rates. A claim reproduced here says the mechanism shows up even at this size; a claim not \
reproduced says that this miniature does not show it, which can mean the effect needs the \
paper's scale (more prompts, more steps, a judge with a wider score spread) as much as that it \
is absent. The numbers are means over the seeds with their spread; every verdict follows the \
fixed rule in its row, and no setting was changed after seeing a result.\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped method config with the shipped backend example added is a valid run config
    /// whose `[backend]` is the example's.
    #[test]
    fn backend_file_is_merged_into_every_run_config() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let configs = root.join("docs/examples/reproduction");
        let file = root.join("docs/examples/engines/reproduction-backend.toml");
        let backend = backend_table(&file).unwrap();
        let o = Options {
            seeds: 1,
            scale: 2,
            configs: configs.clone(),
            out: PathBuf::from("runs/x"),
            model: None,
            judge: None,
            device: "cpu".into(),
            judge_pairs: 0,
            gsm8k: 0,
            backend: Some(file),
            doc: None,
        };
        for (method, _) in METHODS {
            let text = run_config(&configs, method, 7, &o, Some(&backend)).unwrap();
            let cfg = tsr_loop::Config::from_toml_str(&text, &configs.join("x.toml")).unwrap();
            assert_eq!(cfg.run.seed, 7);
            assert_eq!(cfg.run.method.as_str(), method);
            assert_eq!(cfg.loop_.prompts_per_iteration, 16);
            cfg.validate().unwrap();
            let b = cfg.backend.expect("a [backend] section");
            assert_eq!(b.generate, tsr_loop::config::Place::Openai, "{method}");
            assert_eq!(b.judge, tsr_loop::config::Place::Openai, "{method}");
            assert!(b.trainer.is_some() && b.serve.is_some(), "{method}");
        }
        let bad = tempfile_path("no-backend.toml", "[run]\nseed = 1\n");
        let e = backend_table(&bad).unwrap_err();
        assert!(e.to_string().contains("no [backend] table"), "{e}");
    }

    fn tempfile_path(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}
