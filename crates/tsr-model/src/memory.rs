//! Memory estimates for the shapes a job asks for, checked before the job allocates them.
//!
//! A batch size or sample count far too large for the machine would otherwise run until the
//! kernel's OOM killer ends the process, with nothing said. Each estimate here counts only the
//! memory a shape certainly needs (weights, the KV cache, the activations kept for the backward
//! pass, one chunk of logits), never allocator overhead or temporaries, so it errs low: a job
//! that is refused would not have fit, and a job that passes may still be close to the limit.
//!
//! The limit is the memory available now (`MemAvailable` of `/proc/meminfo`, lowered by a cgroup
//! `memory.max` when one is set), or the value given to [`set_limit`] (the CLI's
//! `--memory-limit`). Only host memory is checked: on CUDA the device's own memory is not read,
//! and jobs on it are not refused.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::ModelConfig;
use crate::model::Recompute;

/// 0 = not set (use the machine's available memory).
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Caps the memory the checks allow (bytes); `None` goes back to the machine's available memory.
pub fn set_limit(bytes: Option<u64>) {
    LIMIT.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// The limit the checks use: [`set_limit`]'s value, else the memory available now; `None` when
/// neither is known (then nothing is refused).
pub fn limit() -> Option<u64> {
    match LIMIT.load(Ordering::Relaxed) {
        0 => available(),
        n => Some(n),
    }
}

/// Memory available to this process now: `MemAvailable`, lowered by the cgroup v2 headroom
/// (`memory.max - memory.current`) when a limit is set.
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let mut avail = meminfo.lines().find_map(|l| {
        let kb = l.strip_prefix("MemAvailable:")?.trim().strip_suffix("kB")?;
        kb.trim().parse::<u64>().ok().map(|k| k * 1024)
    })?;
    let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    if let (Some(max), Some(cur)) = (read("memory.max"), read("memory.current")) {
        if let (Ok(max), Ok(cur)) = (max.trim().parse::<u64>(), cur.trim().parse::<u64>()) {
            avail = avail.min(max.saturating_sub(cur));
        }
    }
    Some(avail)
}

/// Parses a size such as `512MiB`, `8GiB`, `8G`, `1.5GB` or a plain number of bytes. Units are
/// powers of 1024 (`K`, `M`, `G`, `T`, with or without `iB`/`B`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (examples: 512MiB, 8GiB, 1000000)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => {
            return Err(format!(
                "unknown size unit {u:?} in {text:?} (use K, M, G or T)"
            ))
        }
    };
    let bytes = value * scale as f64;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(format!("{text:?}: a size must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// An estimate: the total and what it is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// What the memory is for (`generation chunk`, `DPO step`, ...).
    pub what: String,
    /// `(part, bytes)`, for the message.
    pub parts: Vec<(String, u64)>,
}

impl Estimate {
    /// An empty estimate for `what`.
    pub fn new(what: impl Into<String>) -> Self {
        Estimate {
            what: what.into(),
            parts: Vec::new(),
        }
    }

    /// Adds a part (saturating, so absurd shapes give a huge number, not a wrap-around).
    pub fn add(mut self, part: impl Into<String>, bytes: u64) -> Self {
        self.parts.push((part.into(), bytes));
        self
    }

    /// The total in bytes.
    pub fn bytes(&self) -> u64 {
        self.parts
            .iter()
            .fold(0u64, |s, (_, b)| s.saturating_add(*b))
    }

    /// Refuses the estimate if it exceeds [`limit`]; `hint` names the settings that lower it.
    pub fn check(&self, hint: &str) -> Result<(), MemoryLimitError> {
        self.check_against(limit(), hint)
    }

    /// [`Estimate::check`] against an explicit limit.
    pub fn check_against(&self, limit: Option<u64>, hint: &str) -> Result<(), MemoryLimitError> {
        match limit {
            Some(l) if self.bytes() > l => Err(MemoryLimitError {
                estimate: self.clone(),
                limit: l,
                hint: hint.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// A job refused because its estimated memory exceeds the limit.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryLimitError {
    /// The estimate that was refused.
    pub estimate: Estimate,
    /// The limit it was checked against (bytes).
    pub limit: u64,
    /// The settings that lower the estimate.
    pub hint: String,
}

impl fmt::Display for MemoryLimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .estimate
            .parts
            .iter()
            .filter(|(_, b)| *b > 0)
            .map(|(p, b)| format!("{p} {}", human(*b)))
            .collect();
        write!(
            f,
            "{} needs at least {} ({}) but the memory limit is {} (available memory, or \
             --memory-limit); {}",
            self.estimate.what,
            human(self.estimate.bytes()),
            parts.join(", "),
            human(self.limit),
            self.hint
        )
    }
}

impl std::error::Error for MemoryLimitError {}

/// `1.5 GiB`-style text.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn mul(xs: &[usize]) -> u64 {
    xs.iter().fold(1u64, |p, &x| p.saturating_mul(x as u64))
}

/// Number of parameters of a model with this configuration.
pub fn parameters(cfg: &ModelConfig) -> u64 {
    let h = cfg.hidden_size;
    let q = cfg.num_attention_heads * cfg.head_dim();
    let kv = cfg.num_kv_heads() * cfg.head_dim();
    let layer = mul(&[h, q])
        + 2 * mul(&[h, kv])
        + mul(&[q, h])
        + 3 * mul(&[h, cfg.intermediate_size])
        + 2 * h as u64;
    let embed = mul(&[cfg.vocab_size, h]);
    let head = if cfg.tie_word_embeddings { 0 } else { embed };
    embed + head + layer * cfg.num_hidden_layers as u64 + h as u64
}

/// Bytes of the KV cache for `rows` sequences of `tokens` positions each.
pub fn kv_cache_bytes(cfg: &ModelConfig, rows: usize, tokens: usize, elem: usize) -> u64 {
    2 * mul(&[
        cfg.num_hidden_layers,
        cfg.num_kv_heads(),
        cfg.head_dim(),
        rows,
        tokens,
        elem,
    ])
}

/// One generation chunk: `rows` sequences with prompts of up to `prompt` tokens, each extended
/// by up to `max_new` tokens, with `elem`-byte activations. Counts the weights, the KV cache at
/// its full length, the prefill's MLP activations of one layer and the last-position logits.
pub fn generation(
    cfg: &ModelConfig,
    rows: usize,
    prompt: usize,
    max_new: usize,
    elem: usize,
) -> Estimate {
    Estimate::new(format!(
        "a generation chunk of {rows} sequences of up to {} tokens",
        prompt.saturating_add(max_new)
    ))
    .add("weights", parameters(cfg).saturating_mul(elem as u64))
    .add(
        "KV cache",
        kv_cache_bytes(cfg, rows, prompt.saturating_add(max_new), elem),
    )
    .add(
        "prefill activations",
        2 * mul(&[rows, prompt, cfg.intermediate_size, elem]),
    )
    .add("logits", mul(&[rows, cfg.vocab_size, 4]))
}

/// One training step with gradients: `rows` sequences of up to `tokens` tokens, f32 weights
/// with an Adam state (weights, gradients, two moments), the activations the backward pass
/// keeps (per layer and token: the residual stream, the attention input and output and the
/// three MLP projections), and the logits of `logit_tokens` positions at a time (the log-prob
/// chunk) with their gradient. With activation checkpointing (`checkpointing`,
/// [`crate::Model::hidden_states_checkpointed`]) the backward pass keeps each layer's input (and
/// with [`Recompute::Attention`] the MLP's gate and up products) and one layer's activations at a
/// time instead.
pub fn training(
    cfg: &ModelConfig,
    rows: usize,
    tokens: usize,
    logit_tokens: usize,
    checkpointing: Option<Recompute>,
) -> Estimate {
    let per_token_layer = (4 * cfg.hidden_size + 3 * cfg.intermediate_size) as u64 * 4;
    let positions = mul(&[rows, tokens]);
    let kept = |values_per_layer: usize| {
        positions.saturating_mul(
            (cfg.num_hidden_layers as u64 * values_per_layer as u64 * 4)
                .saturating_add(per_token_layer),
        )
    };
    let activations = match checkpointing {
        Some(Recompute::Layers) => kept(cfg.hidden_size),
        Some(Recompute::Attention) => kept(cfg.hidden_size + 2 * cfg.intermediate_size),
        None => positions
            .saturating_mul(cfg.num_hidden_layers as u64)
            .saturating_mul(per_token_layer),
    };
    Estimate::new(format!(
        "a training step on {rows} sequences of up to {tokens} tokens"
    ))
    .add(
        "weights + gradients + Adam state",
        parameters(cfg).saturating_mul(16),
    )
    .add("activations", activations)
    .add(
        "logits",
        2 * mul(&[logit_tokens.min(positions as usize), cfg.vocab_size, 4]),
    )
}

/// Trainable parameters of LoRA adapters `lora` on a model with this configuration:
/// `r * (in + out)` per adapted projection and layer.
pub fn lora_parameters(cfg: &ModelConfig, lora: &crate::LoraConfig) -> u64 {
    let h = cfg.hidden_size;
    let q = cfg.num_attention_heads * cfg.head_dim();
    let kv = cfg.num_kv_heads() * cfg.head_dim();
    let i = cfg.intermediate_size;
    let per_layer: usize = lora
        .targets
        .iter()
        .map(|t| match t.as_str() {
            "q_proj" => h + q,
            "k_proj" | "v_proj" => h + kv,
            "o_proj" => q + h,
            "gate_proj" | "up_proj" | "down_proj" => h + i,
            _ => 0,
        })
        .sum();
    mul(&[lora.r, per_layer, cfg.num_hidden_layers])
}

/// One LoRA training step: frozen weights of `elem` bytes each (no gradient, no optimizer
/// state), f32 adapters with gradients and two Adam moments, and activations and logits as in
/// [`training`] but of `elem` bytes (the adapters add `r` values per token and projection,
/// small beside the rest and left out).
pub fn lora_training(
    cfg: &ModelConfig,
    lora: &crate::LoraConfig,
    rows: usize,
    tokens: usize,
    logit_tokens: usize,
    checkpointing: Option<Recompute>,
    elem: usize,
) -> Estimate {
    let full = training(cfg, rows, tokens, logit_tokens, checkpointing);
    let scale = |b: u64| b / 4 * elem as u64;
    let part = |name: &str| {
        full.parts
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, b)| *b)
    };
    Estimate::new(format!(
        "a LoRA training step on {rows} sequences of up to {tokens} tokens"
    ))
    .add(
        "frozen weights",
        parameters(cfg).saturating_mul(elem as u64),
    )
    .add(
        "adapters + gradients + Adam state",
        lora_parameters(cfg, lora).saturating_mul(16),
    )
    .add("activations", scale(part("activations")))
    .add("logits", part("logits"))
}

/// Host memory to hold `sequences` generated sequences of up to `max_new` tokens each (ids,
/// text and per-token bookkeeping, about 16 bytes a token).
pub fn results(sequences: usize, max_new: usize) -> Estimate {
    Estimate::new(format!(
        "holding {sequences} generated sequences of up to {max_new} tokens"
    ))
    .add("results", mul(&[sequences, max_new, 16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Meta-Llama-3-8B's configuration.
    fn llama3_8b() -> ModelConfig {
        ModelConfig::from_json_str(
            r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":14336,
                "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,
                "rms_norm_eps":1e-5,"vocab_size":128256,"tie_word_embeddings":false,
                "max_position_embeddings":8192,"rope_theta":500000.0}"#,
        )
        .unwrap()
    }

    #[test]
    fn lora_on_llama3_8b() {
        let cfg = llama3_8b();
        assert_eq!(
            parameters(&cfg),
            8_030_261_248,
            "Llama-3-8B's published size"
        );
        // PEFT's count for r = 16 on all seven projections ("trainable params: 41,943,040").
        let lora = crate::LoraConfig::default();
        assert_eq!(lora_parameters(&cfg, &lora), 41_943_040);
        let only_qv = crate::LoraConfig {
            targets: vec!["q_proj".into(), "v_proj".into()],
            ..crate::LoraConfig::default()
        };
        // q: 16 * (4096 + 4096), v: 16 * (4096 + 1024), 32 layers.
        assert_eq!(lora_parameters(&cfg, &only_qv), 32 * 16 * (8192 + 5120));
        // One DPO pair (2 sequences) of 1024 tokens in bf16 with activation checkpointing.
        let step = lora_training(&cfg, &lora, 2, 1024, 1024, Some(Recompute::Layers), 2);
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let part = |n: &str| step.parts.iter().find(|(p, _)| p == n).unwrap().1;
        assert!((gib(part("frozen weights")) - 14.96).abs() < 0.01);
        assert!((gib(part("adapters + gradients + Adam state")) - 0.625).abs() < 0.001);
        assert!(gib(step.bytes()) < 20.0, "{:.2} GiB", gib(step.bytes()));
        let full = training(&cfg, 2, 1024, 1024, Some(Recompute::Layers));
        assert!(
            step.bytes() * 5 < full.bytes(),
            "LoRA in bf16 needs far less than full f32"
        );
    }

    fn smollm2_135m() -> ModelConfig {
        ModelConfig::from_json_str(
            r#"{"model_type":"llama","hidden_size":576,"intermediate_size":1536,
                "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
                "rms_norm_eps":1e-5,"vocab_size":49152,"tie_word_embeddings":true,
                "max_position_embeddings":8192}"#,
        )
        .unwrap()
    }

    #[test]
    fn parameter_count_matches_the_published_size() {
        // SmolLM2-135M: the tensor sizes in its model.safetensors add up to 134,515,008.
        assert_eq!(parameters(&smollm2_135m()), 134_515_008);
    }

    #[test]
    fn kv_cache_is_two_tensors_per_layer() {
        let c = smollm2_135m();
        // 2 (k, v) x 30 layers x 3 heads x 64 dims x 4 bytes = 46,080 bytes per token.
        assert_eq!(kv_cache_bytes(&c, 1, 1, 4), 46_080);
        assert_eq!(kv_cache_bytes(&c, 8, 100, 4), 46_080 * 800);
    }

    #[test]
    fn checks_refuse_above_the_limit_and_name_the_parts() {
        let c = smollm2_135m();
        let small = generation(&c, 4, 100, 100, 4);
        assert!(small
            .check_against(Some(8 << 30), "lower --max-batch")
            .is_ok());
        assert!(small.check_against(None, "x").is_ok());
        let huge = generation(&c, 100_000, 500, 8000, 4);
        let err = huge
            .check_against(Some(8 << 30), "lower --max-batch")
            .unwrap_err()
            .to_string();
        assert!(err.contains("KV cache"), "{err}");
        assert!(err.contains("8.0 GiB"), "{err}");
        assert!(err.contains("lower --max-batch"), "{err}");
        // Absurd shapes saturate instead of wrapping to a small number.
        let absurd = training(&c, usize::MAX, usize::MAX, 1024, None);
        assert_eq!(absurd.bytes(), u64::MAX);
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("1.5GB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn available_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let a = available().expect("/proc/meminfo has MemAvailable");
            assert!(a > 0);
        }
    }
}
