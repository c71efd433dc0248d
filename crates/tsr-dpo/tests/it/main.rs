//! Integration tests of tsr-dpo.

mod adamw_golden;
mod lora;
mod loss_golden;
mod pipeline;
mod sft;
mod sft_golden;
mod trainer;
