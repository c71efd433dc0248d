//! Integration tests of tsr-dpo.

mod adamw_golden;
mod loss_golden;
mod sft;
mod sft_golden;
mod trainer;
