//! The `[backend]` settings of a remote engine ([`RemoteConfig`]) and their validation.

use serde::{Deserialize, Serialize};

use super::RemoteError;

/// The `[backend]` settings of a remote engine (one role's servers).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Base URLs of the servers (replicas of one model), e.g. `http://127.0.0.1:8080`; a trailing
    /// `/` or `/v1` is dropped.
    pub urls: Vec<String>,
    /// The `model` field of each request; `None`: the first model the server lists in
    /// `/v1/models` (a llama.cpp server ignores the field).
    pub model: Option<String>,
    /// The NAME of the environment variable holding the API key (`None`: no key is sent).
    pub api_key_env: Option<String>,
    /// Requests in flight per URL.
    pub max_in_flight: usize,
    /// Time limit of one HTTP request, connecting and reading the whole answer, in seconds.
    pub timeout_s: f64,
    /// Retries after a connection error, timeout or 5xx answer (0: try once).
    pub retries: u32,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            model: None,
            api_key_env: None,
            max_in_flight: 4,
            timeout_s: 600.0,
            retries: 3,
        }
    }
}

impl RemoteConfig {
    /// One server, the other settings at their defaults.
    pub fn single(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            ..Self::default()
        }
    }

    /// Checks the values; returns the normalised base URLs.
    pub fn validate(&self) -> Result<Vec<String>, RemoteError> {
        let invalid = |field, reason: &str| RemoteError::InvalidConfig {
            field,
            reason: reason.to_string(),
        };
        if self.urls.is_empty() {
            return Err(invalid("urls", "must name at least one server"));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be at least 1"));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(invalid("timeout_s", "must be a positive number of seconds"));
        }
        if self.api_key_env.as_deref() == Some("") {
            return Err(invalid("api_key_env", "must name an environment variable"));
        }
        self.urls
            .iter()
            .map(|u| {
                let u = u.trim();
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(RemoteError::InvalidConfig {
                        field: "urls",
                        reason: format!("{u:?} does not start with http:// or https://"),
                    });
                }
                let u = u.trim_end_matches('/');
                Ok(u.strip_suffix("/v1").unwrap_or(u).to_string())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c: RemoteConfig = toml::from_str(
            r#"urls = ["http://127.0.0.1:8080/v1/", "https://h.example/"]
               api_key_env = "MY_KEY""#,
        )
        .unwrap();
        assert_eq!(c.max_in_flight, 4);
        assert_eq!(c.retries, 3);
        assert_eq!(c.timeout_s, 600.0);
        assert_eq!(
            c.validate().unwrap(),
            ["http://127.0.0.1:8080", "https://h.example"]
        );
        assert!(toml::from_str::<RemoteConfig>("urls = []\nmodle = \"x\"").is_err());
        for (bad, field) in [
            (RemoteConfig::default(), "urls"),
            (RemoteConfig::single("127.0.0.1:8080"), "urls"),
            (
                RemoteConfig {
                    max_in_flight: 0,
                    ..RemoteConfig::single("http://h")
                },
                "max_in_flight",
            ),
            (
                RemoteConfig {
                    timeout_s: 0.0,
                    ..RemoteConfig::single("http://h")
                },
                "timeout_s",
            ),
        ] {
            match bad.validate() {
                Err(RemoteError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
    }
}
