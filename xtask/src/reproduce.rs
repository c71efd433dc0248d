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
    reproduction_report, Accuracy, HeadToHead, ReproRun, ReproductionInput, Verdict,
};
use tsr_loop::report::{write_report, ReportOptions, XAxis};

/// The methods in the order they run, with the iterations the comparison uses.
pub const METHODS: [(&str, u32); 4] = [("sr", 4), ("tsr", 2), ("past-only", 2), ("future-only", 2)];

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
fn run_config(configs: &Path, method: &str, seed: u64, o: &Options) -> Result<String> {
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

/// The last finished iteration of a run folder (from `summary.json`).
fn last_iteration(dir: &Path) -> Result<u32> {
    let path = dir.join("summary.json");
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    v["iterations"]
        .as_array()
        .and_then(|a| a.iter().filter_map(|i| i["iteration"].as_u64()).max())
        .map(|i| i as u32)
        .with_context(|| format!("{}: no finished iteration", path.display()))
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
    let mut runs = Vec::new();
    for seed in 0..o.seeds {
        for (method, iterations) in METHODS {
            let name = format!("{method}-seed{seed}");
            let dir = out.join(&name);
            let cfg = out.join("configs").join(format!("{name}.toml"));
            let text = run_config(&configs, method, seed, o)?;
            let mut cmd = Command::new(tsr);
            if dir.join("run.json").exists() {
                cmd.args(["iterate", "--resume"]).arg(&dir);
            } else {
                std::fs::write(&cfg, text)?;
                cmd.args(["iterate", "--config"])
                    .arg(&cfg)
                    .arg("--run-dir")
                    .arg(&dir);
            }
            cmd.args(["--iterations", &iterations.to_string()])
                .args(device);
            run_step(
                &format!(
                    "{name} ({:.0} min so far)",
                    t0.elapsed().as_secs_f64() / 60.0
                ),
                &mut cmd,
            )?;
            runs.push(ReproRun {
                method: method.to_string(),
                seed,
                dir,
            });
        }
    }

    // 2. Head to head: TSR's final model against each other method's, per seed.
    let mut head_to_head = Vec::new();
    let final_of = |r: &ReproRun| -> Result<(PathBuf, PathBuf)> {
        let last = last_iteration(&r.dir)?;
        let answers = r
            .dir
            .join("eval")
            .join(format!("answers-iter-{last:03}-model.jsonl"));
        anyhow::ensure!(
            answers.is_file(),
            "{}: no eval answers of the final model (is [eval] in the config?)",
            answers.display()
        );
        Ok((r.dir.join(format!("iter-{last:03}/model")), answers))
    };
    for seed in 0..o.seeds {
        let of = |m: &str| {
            runs.iter()
                .find(|r| r.seed == seed && r.method == m)
                .unwrap()
        };
        let tsr_run = of("tsr");
        let (_, tsr_answers) = final_of(tsr_run)?;
        for (other, _) in METHODS.iter().filter(|(m, _)| *m != "tsr") {
            let (_, other_answers) = final_of(of(other))?;
            let dir = out.join("eval").join(format!("seed{seed}-tsr-vs-{other}"));
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
                run_step(&format!("seed {seed}: TSR vs {other}"), &mut cmd)?;
            }
            head_to_head.push(HeadToHead {
                seed,
                model: "tsr".into(),
                baseline: other.to_string(),
                records: dir.join("records.jsonl"),
            });
        }
    }

    // 3. Judge accuracy (and GSM8K) of M_0 and of every final model.
    let mut models: Vec<(String, Option<u64>, String)> = vec![("m0".into(), None, m0.clone())];
    for r in &runs {
        let (model, _) = final_of(r)?;
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
         judge. This invocation took {minutes:.0} minutes on {cores} CPU cores (steps already done \
         are skipped, not timed; each run's own wall seconds are in the tables, and they vary with \
         the machine's other load). The charts draw seed 0's runs, one line per \
         method; the tables give means and spread over all seeds.\n\n\
         Rerun it with `cargo xtask reproduce`; `--scale N`, `--seeds N`, `--model`, `--judge`, \
         `--device cuda` and `--configs DIR` scale it up (see [scaling.md](scaling.md)).\n",
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
