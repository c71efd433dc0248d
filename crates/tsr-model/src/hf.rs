//! Hugging Face safetensors directories: loading and saving.
