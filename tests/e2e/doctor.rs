use crate::{assert_success, tsr};

#[test]
fn doctor_reports_torch_2_11_and_cpu() {
    let out = tsr().args(["doctor", "--json"]).output().unwrap();
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["libtorch"].as_str().unwrap().split('+').next(),
        Some("2.11.0")
    );
    assert_eq!(v["tsr"], env!("CARGO_PKG_VERSION"));
    assert!(v["threads"].as_i64().unwrap() >= 1);
    assert!(v["cuda_devices"].as_i64().unwrap() >= 0);
}
