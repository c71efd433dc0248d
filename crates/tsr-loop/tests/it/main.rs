//! Integration tests of the loop with the deterministic fake backend.

mod common;
mod crash;
mod errors;
mod eval;
mod hardening;
mod methods;
mod report;
mod reproduction;
