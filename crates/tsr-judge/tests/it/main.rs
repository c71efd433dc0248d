//! Integration tests of tsr-judge (one test binary; modules by topic).

mod fake;
mod jsonl;
mod llm_judge;
mod modes;
mod parse_props;
mod parse_table;
mod prompt;
