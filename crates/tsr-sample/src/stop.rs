//! Stop strings, checked incrementally on the decoded tail of each sequence.
//!
//! After every new token only the last few tokens are decoded (enough to cover the longest stop
//! string: a token decodes to at least one byte, plus slack for multi-byte characters split across
//! tokens). Only when a stop string shows up in that tail is the whole completion decoded and cut
//! before the first occurrence of any stop string.

/// Decodes token ids to text (the tokenizer's decode, special tokens skipped).
pub trait Decode {
    type Error;
    fn decode(&self, ids: &[u32]) -> Result<String, Self::Error>;
}

impl<E, F: Fn(&[u32]) -> Result<String, E>> Decode for F {
    type Error = E;
    fn decode(&self, ids: &[u32]) -> Result<String, E> {
        self(ids)
    }
}

/// The stop strings of one generation call.
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    window: usize,
}

impl StopStrings {
    /// Empty strings are ignored.
    pub fn new(stops: &[String]) -> Self {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        Self {
            stops,
            window: longest + 4,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// The earliest byte offset in `text` at which a stop string starts.
    pub fn find(&self, text: &str) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
    }

    /// Called after a token was appended to `ids`: `Some(text cut before the stop string)` when
    /// the completion now contains a stop string.
    pub fn check<D: Decode>(&self, ids: &[u32], decoder: &D) -> Result<Option<String>, D::Error> {
        if self.stops.is_empty() || ids.is_empty() {
            return Ok(None);
        }
        let tail = &ids[ids.len().saturating_sub(self.window)..];
        let tail_text = decoder.decode(tail)?;
        if self.find(&tail_text).is_none() {
            return Ok(None);
        }
        let full = decoder.decode(ids)?;
        Ok(self.find(&full).map(|at| full[..at].to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A toy decoder: token i is the i-th entry of a table.
    fn table(ids: &[u32]) -> Result<String, ()> {
        const T: [&str; 6] = ["a", "b", "</", "s>", "é", "\n\n"];
        Ok(ids.iter().map(|&i| T[i as usize]).collect())
    }

    #[test]
    fn finds_a_stop_string_split_over_tokens_and_cuts_before_it() {
        let stop = StopStrings::new(&["</s>".to_string()]);
        assert_eq!(stop.check(&[0, 1, 2], &table).unwrap(), None);
        assert_eq!(
            stop.check(&[0, 1, 2, 3], &table).unwrap(),
            Some("ab".to_string())
        );
    }

    #[test]
    fn earliest_of_several_stop_strings_wins() {
        let stop = StopStrings::new(&["b".to_string(), "\n\n".to_string()]);
        assert_eq!(
            stop.check(&[0, 4, 5, 0, 1], &table).unwrap(),
            Some("aé".to_string())
        );
    }

    #[test]
    fn long_completions_only_decode_the_tail_until_a_match() {
        let stop = StopStrings::new(&["ab".to_string()]);
        let calls = std::cell::Cell::new(0usize);
        let lens = std::cell::RefCell::new(Vec::new());
        let counting = |ids: &[u32]| -> Result<String, ()> {
            calls.set(calls.get() + 1);
            lens.borrow_mut().push(ids.len());
            table(ids)
        };
        let mut ids = vec![0u32; 100];
        assert_eq!(stop.check(&ids, &counting).unwrap(), None);
        assert!(lens.borrow().iter().all(|&n| n <= 6));
        ids.push(1);
        assert_eq!(stop.check(&ids, &counting).unwrap(), Some("a".repeat(99)));
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn no_stop_strings_never_decode() {
        let stop = StopStrings::new(&[String::new()]);
        assert!(stop.is_empty());
        let never = |_: &[u32]| -> Result<String, ()> { panic!("decoded") };
        assert_eq!(stop.check(&[1, 2, 3], &never).unwrap(), None);
    }
}
