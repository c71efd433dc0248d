//! Seed derivation, in one place for the whole workspace.
//!
//! Every seed tsr derives is a 64-bit FNV-1a hash of some bytes, finished by the SplitMix64
//! output function (which spreads nearby hashes over the whole range). Three byte layouts are in
//! use; each is part of a file format (a run folder, a judged file, a `tsr generate` output) and
//! must not change, or a resumed run or a rerun would draw other samples:
//!
//! | function | bytes hashed | used for |
//! |---|---|---|
//! | [`derive_seed`] | the run seed (8 bytes LE), then each label followed by `0xff` | every stochastic call of a run (`tsr_loop`) |
//! | [`item_seed`] | the seed (8 bytes LE), then the item id | an item's judge samples, data splits ([`crate::eft`]) |
//! | [`id_seed`] | the id's JSON text, the hash XORed into the seed | `tsr generate`'s per-prompt requests |
//!
//! The primitives ([`fnv1a64`], [`fnv1a64_extend`], [`splitmix64_mix`], [`splitmix64`]) are
//! public so that other hashing in the workspace (test doubles, data generators) uses the same
//! code; their published test vectors are checked below.

/// FNV-1a's 64-bit offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// SplitMix64's increment (the golden-ratio gamma).
pub const SPLITMIX_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// FNV-1a 64 of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_extend(FNV_OFFSET, bytes)
}

/// Continues an FNV-1a 64 hash `h` over `bytes`.
pub fn fnv1a64_extend(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
}

/// The SplitMix64 output function (without the state increment).
pub fn splitmix64_mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One SplitMix64 step from state `z`: the increment, then [`splitmix64_mix`].
pub fn splitmix64(z: u64) -> u64 {
    splitmix64_mix(z.wrapping_add(SPLITMIX_GAMMA))
}

/// Seed for the labelled call `parts` of the run seeded with `run_seed` (iteration, stage, prompt
/// id, response index...), so results depend on neither batching, chunking nor resuming.
pub fn derive_seed(run_seed: u64, parts: &[&str]) -> u64 {
    let mut h = fnv1a64_extend(FNV_OFFSET, &run_seed.to_le_bytes());
    for p in parts {
        h = fnv1a64_extend(h, p.as_bytes());
        h = fnv1a64_extend(h, &[0xff]);
    }
    splitmix64(h)
}

/// The sampling seed of one item: a stable hash of `(seed, id)`. It depends on nothing else, so
/// an item's judge samples do not change with the batch it is judged in, and it is the same on
/// every platform and Rust version.
pub fn item_seed(seed: u64, id: &str) -> u64 {
    let h = fnv1a64_extend(fnv1a64(&seed.to_le_bytes()), id.as_bytes());
    splitmix64_mix(h)
}

/// The seed of a request for the prompt with JSON id `id` under base seed `seed`: the id's JSON
/// text hashed, mixed into the seed.
pub fn id_seed(seed: u64, id: &serde_json::Value) -> u64 {
    splitmix64_mix(seed ^ fnv1a64(id.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_match_published_vectors() {
        // FNV-1a 64-bit test vectors (Fowler/Noll/Vo reference test suite).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a64_extend(fnv1a64(b"foo"), b"bar"), fnv1a64(b"foobar"));
        // SplitMix64 seeded with 0: the first output (Vigna's C reference implementation).
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64_mix(SPLITMIX_GAMMA), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn derived_seeds_depend_on_every_input_and_on_boundaries() {
        let a = derive_seed(1, &["it-1", "gen", "p1"]);
        assert_eq!(a, derive_seed(1, &["it-1", "gen", "p1"]));
        assert_ne!(a, derive_seed(2, &["it-1", "gen", "p1"]));
        assert_ne!(a, derive_seed(1, &["it-2", "gen", "p1"]));
        assert_ne!(derive_seed(0, &["ab", "c"]), derive_seed(0, &["a", "bc"]));
        assert_eq!(item_seed(1, "a"), item_seed(1, "a"));
        assert_ne!(item_seed(1, "a"), item_seed(2, "a"));
        assert_ne!(item_seed(1, "a"), item_seed(1, "b"));
        let id = serde_json::json!("p1");
        assert_ne!(id_seed(1, &id), id_seed(2, &id));
        assert_ne!(id_seed(1, &id), id_seed(1, &serde_json::json!(1)));
    }
}
