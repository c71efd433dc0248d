//! Integration tests of the curation rules: hand-written cases for every rule and property
//! tests of their invariants on random pools.

mod cases;
mod props;
