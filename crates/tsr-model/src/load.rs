//! Placeholder: filled in by the GGUF/tokenizer half of the tsr-model issue.
