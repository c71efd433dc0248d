//! Integration tests of tsr-dpo.

mod loss_golden;
mod trainer;
