//! Integration tests of tsr-dpo.

mod adamw_golden;
mod loss_golden;
mod trainer;
