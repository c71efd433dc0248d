//! Deterministic seed derivation.
//!
//! Every stochastic call of a run gets a seed derived from the run seed and a path of labels
//! (iteration, stage, prompt id, response index), so results do not depend on batching, chunking
//! or on whether the run was resumed. The hash is FNV-1a 64 over the labels (each followed by a
//! 0xff separator byte, which cannot occur in UTF-8) finished by the SplitMix64 mixer; it is part
//! of the run format and must not change.

/// Seed for the labelled call `parts` of the run seeded with `run_seed`.
pub fn derive_seed(run_seed: u64, parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in run_seed.to_le_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }
    splitmix64(h)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_depend_on_every_label_and_on_boundaries() {
        let a = derive_seed(1, &["it-1", "gen", "p1"]);
        assert_eq!(a, derive_seed(1, &["it-1", "gen", "p1"]));
        assert_ne!(a, derive_seed(2, &["it-1", "gen", "p1"]));
        assert_ne!(a, derive_seed(1, &["it-2", "gen", "p1"]));
        assert_ne!(derive_seed(0, &["ab", "c"]), derive_seed(0, &["a", "bc"]));
    }
}
