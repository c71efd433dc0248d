//! `tsr_loop::report`: charts and report.md of run folders made by the fake backend and by hand.

use crate::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tsr_loop::report::{write_report, ReportOptions, ReportOutput, XAxis};
use tsr_loop::Method;

/// Width, height and the share of dark pixels (text, axes, markers) of a PNG.
fn png_facts(path: &Path) -> (u32, u32, f64) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = &buf[..info.buffer_size()];
    let dark = px.chunks(3).filter(|p| p.iter().all(|&c| c < 80)).count();
    (info.width, info.height, dark as f64 / (px.len() / 3) as f64)
}

fn check_charts(out: &ReportOutput) {
    for c in &out.charts {
        let (w, h, dark) = png_facts(&c.path);
        assert_eq!((w, h), (c.width, c.height), "{}", c.file);
        // Text and axes are drawn in black: a blank or text-less image has (almost) none.
        assert!(dark > 0.002, "{}: {dark}", c.file);
    }
}

fn files(out: &ReportOutput) -> Vec<&str> {
    out.charts.iter().map(|c| c.file.as_str()).collect()
}

fn edit_summary(dir: &Path, f: impl Fn(usize, &mut Value)) {
    let p = dir.join("summary.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    for (i, it) in v["iterations"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        f(i, it);
    }
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn eval(win_rate: f64) -> Value {
    let m = |opp: &str| {
        json!({"opponent": opp, "model": "iter-001/model", "wins": 10, "losses": 5, "ties": 1,
               "unscored": 0, "n": 16, "win_rate": win_rate, "ci_low": 0.43, "ci_high": 0.82})
    };
    json!({"prompts": 32, "judge": "m0", "vs_previous": m("m0"), "vs_initial": m("m0")})
}

#[test]
fn sr_and_tsr_runs_of_the_fake_backend_on_one_report() {
    let t = tempfile::tempdir().unwrap();
    let (sr, tsr) = (t.path().join("sr"), t.path().join("tsr"));
    run_fresh(&sr, Method::Sr, 2, 4);
    run_fresh(&tsr, Method::Tsr, 3, 6);
    edit_summary(&tsr, |i, it| it["eval"] = eval(0.5 + 0.1 * i as f64));
    let out_dir = t.path().join("report");
    let out = write_report(
        &[sr.clone(), tsr.clone()],
        &out_dir,
        &ReportOptions::default(),
    )
    .unwrap();
    assert_eq!(
        files(&out),
        [
            "scores.png",
            "similarity.png",
            "dpo.png",
            "dpo-steps.png",
            "shares.png",
            "win-rates.png",
            "compute.png"
        ]
    );
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    check_charts(&out);
    assert!(!out.results_are_real);
    let md = std::fs::read_to_string(&out.markdown).unwrap();
    assert!(md.contains("WARNING: NOT REAL RESULTS"), "{md}");
    assert!(md.contains("fake backend"), "{md}");
    for c in &out.charts {
        assert!(md.contains(&format!("]({})", c.file)), "{md}");
    }
    // Several runs: cumulative tokens on the x-axis, a table per run, numbers from the summaries.
    assert!(md.contains("cumulative tokens"), "{md}");
    assert!(
        md.contains("### sr (sr)") && md.contains("### tsr (tsr)"),
        "{md}"
    );
    let s: Value =
        serde_json::from_slice(&std::fs::read(tsr.join("summary.json")).unwrap()).unwrap();
    let it2 = &s["iterations"][1];
    for key in [
        "chosen_score_mean",
        "score_gap",
        "rejected_from_initial_share",
    ] {
        let v = format!("{:.3}", it2[key].as_f64().unwrap());
        assert!(md.contains(&v), "{key} {v}\n{md}");
    }
    let m = format!(
        "{:.3}",
        it2["dpo_future"]["reward_margin"].as_f64().unwrap()
    );
    assert!(md.contains(&m), "{m}\n{md}");
    assert!(md.contains("0.600 [0.43, 0.82] (10-5-1 of 16)"), "{md}");
    // The SR table has no future columns.
    let sr_table = &md[md.find("### sr (sr)").unwrap()..md.find("### tsr (tsr)").unwrap()];
    assert!(!sr_table.contains("future"), "{sr_table}");
    // Again, with wall seconds: same charts, other axis; the folder is overwritten.
    let mut opts = ReportOptions::default();
    opts.x_axis = XAxis::WallSeconds;
    let again = write_report(&[sr, tsr], &out_dir, &opts).unwrap();
    assert_eq!(again.charts.len(), 7);
    check_charts(&again);
    let md = std::fs::read_to_string(&again.markdown).unwrap();
    assert!(md.contains("cumulative wall time"), "{md}");
}

/// A run folder written by hand: one SR iteration with real results, no eval, no future model.
fn hand_run(dir: &Path, iterations: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let its: Vec<Value> = (1..=iterations)
        .map(|i| {
            json!({
                "iteration": i, "method": "sr", "pairs": 16, "results_are_real": true,
                "test_doubles": [],
                "chosen_score_mean": 4.125 + i as f64, "rejected_score_mean": 2.5,
                "score_gap": 1.625 + i as f64, "similarity_mean": 0.8526,
                "rejected_from_initial_share": null, "chosen_from_future_share": null,
                "dpo": {"reward_margin": 0.1833, "reward_accuracy": 0.75, "final_loss": 0.5632,
                        "steps": 2, "pairs": 16},
                "dpo_future": null,
                // The eval stage's tokens and seconds are not counted as the method's compute.
                "compute": {"wall_s": 100.0 * i as f64 + 7.0,
                            "tokens_generated": 1000 + 100, "tokens_judged": 2000 + 400,
                            "tokens_trained": 3000,
                            "stages": {"gen-current": {"wall_s": 40.0}, "train": {"wall_s": 60.0},
                                       "eval": {"wall_s": 7.0, "tokens_generated": 100,
                                                "tokens_judged": 400, "tokens_trained": 0}},
                            "cumulative": {"tokens_generated": 1100 * i, "tokens_judged": 2400 * i,
                                           "tokens_trained": 3000 * i}}
            })
        })
        .collect();
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec(&json!({"iterations": its, "method": "sr"})).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("provenance.json"),
        r#"{"backend": "libtorch (hand-made)", "judge": "llm judge", "test_doubles": []}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("run.json"),
        r#"{"format": 1, "tsr_version": "0.1.0"}"#,
    )
    .unwrap();
    for i in 1..=iterations {
        let idir = dir.join(format!("iter-{i:03}"));
        std::fs::create_dir_all(&idir).unwrap();
        std::fs::write(
            idir.join("train-model.jsonl"),
            "{\"step\":1,\"loss\":0.693,\"rewards/margins\":0.0,\"rewards/accuracies\":0.0}\n\
             {\"step\":2,\"loss\":0.61,\"rewards/margins\":0.18,\"rewards/accuracies\":0.75}\n",
        )
        .unwrap();
    }
}

#[test]
fn one_real_sr_iteration_skips_what_it_lacks() {
    let t = tempfile::tempdir().unwrap();
    let run = t.path().join("sr-real");
    hand_run(&run, 1);
    let out = write_report(&[run], &t.path().join("out"), &ReportOptions::default()).unwrap();
    assert_eq!(
        files(&out),
        [
            "scores.png",
            "similarity.png",
            "dpo.png",
            "dpo-steps.png",
            "compute.png"
        ]
    );
    let skipped: Vec<&str> = out.skipped.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(skipped, ["shares.png", "win-rates.png"]);
    check_charts(&out);
    // Stacked panels: scores has two, dpo-steps three.
    let h = |f: &str| out.charts.iter().find(|c| c.file == f).unwrap().height;
    let p = ReportOptions::default().panel_height;
    assert_eq!(
        (h("scores.png"), h("dpo-steps.png"), h("similarity.png")),
        (2 * p, 3 * p, p)
    );
    assert!(out.results_are_real);
    let md = std::fs::read_to_string(&out.markdown).unwrap();
    assert!(!md.contains("WARNING"), "{md}");
    assert!(md.starts_with("# tsr report: sr-real\n"), "{md}");
    assert!(
        md.contains("libtorch (hand-made)") && md.contains("0.1.0"),
        "{md}"
    );
    for v in [
        "5.125", "2.500", "2.625", "0.853", "0.183", "0.750", "0.563", "107.0", "6000",
    ] {
        assert!(md.contains(v), "{v}\n{md}");
    }
    let table = &md[md.find("## Key numbers").unwrap()..md.find("## Charts").unwrap()];
    assert!(
        !table.contains("future") && !table.contains("win rate"),
        "{table}"
    );
    assert!(
        md.contains("![Judge scores of the training pairs](scores.png)"),
        "{md}"
    );
    assert!(!md.contains("](win-rates.png)"), "{md}");
    assert!(
        md.contains("`win-rates.png`: no iteration has an `eval` object"),
        "{md}"
    );
}

#[test]
fn bad_run_folders_are_errors_that_name_the_file() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let opts = ReportOptions::default();
    let err = |runs: &[PathBuf]| write_report(runs, &out, &opts).unwrap_err().to_string();

    let missing = t.path().join("nope");
    let e = err(&[missing]);
    assert!(e.contains("nope") && e.contains("not a folder"), "{e}");

    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = err(std::slice::from_ref(&empty));
    assert!(e.contains("empty") && e.contains("not a run folder"), "{e}");

    std::fs::write(empty.join("summary.json"), "{\"iterations\": []}").unwrap();
    let e = err(std::slice::from_ref(&empty));
    assert!(e.contains("no finished iteration"), "{e}");

    std::fs::write(empty.join("summary.json"), "{\"iterations\": [").unwrap();
    let e = err(std::slice::from_ref(&empty));
    assert!(e.contains("empty/summary.json"), "{e}");

    let run = t.path().join("run");
    hand_run(&run, 2);
    std::fs::write(
        run.join("iter-002/train-model.jsonl"),
        "{\"step\":1,\"loss\":0.6}\nnot json\n",
    )
    .unwrap();
    let e = err(&[run]);
    assert!(
        e.contains("iter-002/train-model.jsonl") && e.contains("line 2"),
        "{e}"
    );
    assert!(!out.join("report.md").exists());

    assert!(err(&[]).contains("no run folder"));
    assert!("bogus".parse::<XAxis>().unwrap_err().contains("bogus"));
    assert_eq!("wall".parse::<XAxis>().unwrap(), XAxis::WallSeconds);
}
