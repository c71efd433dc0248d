//! Integration tests of tsr-judge (one test binary; modules by topic).

mod fake;
mod jsonl;
mod llm_judge;
mod parse_props;
mod parse_table;
mod prompt;
