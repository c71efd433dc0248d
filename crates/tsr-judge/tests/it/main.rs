//! Integration tests of tsr-judge (one test binary; modules by topic).

mod eft;
mod engine;
mod errors;
mod fake;
mod jsonl;
mod judge_eval;
mod llm_judge;
mod modes;
mod pairs;
mod parse_props;
mod parse_table;
mod prompt;
