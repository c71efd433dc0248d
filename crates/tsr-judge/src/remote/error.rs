//! [`RemoteError`]: what goes wrong talking to a remote engine.

/// What goes wrong talking to a remote engine. Every variant that concerns a server names its
/// URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// A configuration value is out of its allowed range.
    #[error("invalid remote engine config: `{field}` {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// `api_key_env` names a variable that is not set (its value is never shown).
    #[error("the API key variable `{var}` (api_key_env) is not set or not valid unicode")]
    ApiKey { var: String },

    /// No answer: connection refused, reset, timed out, or the name did not resolve.
    #[error("{url}: no answer after {attempts} attempt(s) (is the server running?): {reason}")]
    Unreachable {
        url: String,
        attempts: u32,
        reason: String,
    },

    /// An HTTP error status (a 5xx or 429 after the retries; a 4xx at once).
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },

    /// The answer is not JSON, or not in the expected shape.
    #[error("{url}: malformed answer: {message}")]
    Malformed { url: String, message: String },

    /// The server lacks something a role needs.
    #[error("{url}: the server does not support {capability}, which {needed_for} needs")]
    Unsupported {
        url: String,
        capability: &'static str,
        needed_for: &'static str,
    },
}
