//! `tsr-loop`: the Self-Rewarding / Temporal Self-Rewarding iteration orchestrator.
//!
//! The loop is plain Rust over one trait, [`Backend`] (sample, judge, train with DPO, measure
//! hidden-state similarity), so it runs against real libtorch models in the CLI and against a
//! deterministic fake ([`fake::FakeBackend`]) in tests. It owns the run folder ([`Run`]): every
//! generation, verdict and pair is written atomically, each stage records its completion last,
//! and [`Run::execute`] on an existing folder continues after a crash without redoing completed
//! work. See [`run`] for the folder layout and `docs/algorithm.md` for the method.

pub mod backend;
pub mod compare;
pub mod config;
pub mod defaults;
pub mod engine;
mod error;
pub mod fake;
pub mod fsio;
pub mod lock;
pub mod prompts;
pub mod records;
pub mod report;
pub mod run;
pub mod seed;
pub mod seed_data;
pub mod summary;

pub use backend::{
    Backend, Event, ModelRef, NoObserver, Observer, Provenance, TrainPair, TrainReport,
};
pub use config::{
    BackendSection, Config, EvalSection, FuturePrompts, LoopSection, Method, Place, RunSection,
    ServeSection, TrainPlace, TrainerSection,
};
pub use engine::{EngineBackend, ModelFiles};
pub use error::{error_chain, BackendError, LoopError, Result};
pub use prompts::{
    load_prompts, parse_prompt_lines, parse_prompts, read_prompt_lines, PromptFormat, PromptLine,
    PromptRecord,
};
pub use run::{Run, RunOutcome, RunState, Stage};
pub use seed::derive_seed;
pub use summary::{
    ComputeSummary, CumulativeCompute, CurationPhase, CurationSummary, DpoSummary, EvalMatchup,
    EvalSummary, IterationSummary, JudgingSummary, PairStats, RunSummary, StageCompute,
};
