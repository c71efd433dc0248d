//! Runs `examples/custom_loop.rs` on the tiny Llama of tsr-dpo's SFT fixture with the hash judge:
//! both iterations keep pairs under the example's own margin rule, train, and the second
//! iteration starts from the first one's model.

#[path = "../examples/custom_loop.rs"]
mod custom_loop;

use std::path::Path;

#[test]
fn the_custom_loop_example_trains_two_iterations() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tsr-dpo/tests/fixtures/sft/model");
    let out = tempfile::tempdir().unwrap();
    let mut backend = custom_loop::backend(true).unwrap();
    let report = custom_loop::run(&mut *backend, model.to_str().unwrap(), out.path(), 7).unwrap();
    assert_eq!(report.len(), 2);
    for (i, it) in report.iter().enumerate() {
        assert!(it.pairs > 0, "iteration {}: no pairs: {report:?}", i + 1);
        assert_eq!(it.pairs + it.dropped, 4, "every prompt is kept or dropped");
        assert!(
            it.dpo_steps > 0,
            "iteration {}: no training: {report:?}",
            i + 1
        );
        assert!(it.reward_margin.is_some_and(|m| m > 0.0), "{report:?}");
        assert!(Path::new(&it.model.location).join("config.json").is_file());
    }
    assert_eq!(report[1].model.name, "model-2");
}
