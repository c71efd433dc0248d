//! Means and spreads over seeds, and the `mean ± sd` cells of the tables.

/// Mean and sample standard deviation (0 for one value); `None` for no values.
pub(super) fn mean_sd(values: &[f64]) -> Option<(f64, f64, usize)> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some((mean, sd, n))
}

pub(super) fn cell(values: &[f64], decimals: usize, seeds: usize) -> String {
    match mean_sd(values) {
        None => "–".into(),
        Some((m, sd, n)) => {
            let missing = if n < seeds {
                format!(" (n={n})")
            } else {
                String::new()
            };
            format!("{m:.decimals$} ± {sd:.decimals$}{missing}")
        }
    }
}

pub(super) fn mean(v: &[f64]) -> Option<f64> {
    mean_sd(v).map(|(m, _, _)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let (m, sd, n) = mean_sd(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((m, n), (2.0, 3));
        assert!((sd - 1.0).abs() < 1e-12);
        assert_eq!(mean_sd(&[5.0]), Some((5.0, 0.0, 1)));
        assert_eq!(mean_sd(&[]), None);
        assert_eq!(cell(&[1.0, 3.0], 2, 3), "2.00 ± 1.41 (n=2)");
    }
}
