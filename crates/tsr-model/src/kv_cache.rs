//! Key/value cache for incremental decoding.
