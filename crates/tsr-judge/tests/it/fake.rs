//! A scripted [`Generator`] for tests: records every call and answers from a script.

use tsr_judge::{
    Completion, FinishReason, GenRequest, GenerateError, Generator, Prompt, SamplingParams,
};

type Script = Box<dyn FnMut(&GenRequest, usize) -> (String, FinishReason)>;

/// Answers sample `j` of each request with `script(request, j)`; records the calls.
pub struct Scripted {
    pub calls: Vec<(Vec<GenRequest>, SamplingParams)>,
    script: Script,
    /// Drop the last output of each call (to provoke a count mismatch).
    pub drop_last_output: bool,
    /// Return one completion fewer than asked for every request.
    pub short_samples: bool,
    /// Fail every call.
    pub fail: bool,
}

impl Scripted {
    pub fn new(script: impl FnMut(&GenRequest, usize) -> (String, FinishReason) + 'static) -> Self {
        Self {
            calls: Vec::new(),
            script: Box::new(script),
            drop_last_output: false,
            short_samples: false,
            fail: false,
        }
    }

    /// Every sample says `text`, ending with EOS.
    pub fn constant(text: &str) -> Self {
        let text = text.to_string();
        Self::new(move |_, _| (text.clone(), FinishReason::Eos))
    }
}

/// The judge prompt of a request (the single user message).
pub fn user_message(r: &GenRequest) -> &str {
    match &r.prompt {
        Prompt::Chat(m) if m.len() == 1 && m[0].role == "user" => &m[0].content,
        other => panic!("expected one user message, got {other:?}"),
    }
}

/// The response embedded in a judge prompt rendered from the default template.
pub fn response_of(r: &GenRequest) -> &str {
    let p = user_message(r);
    let start = p.find("<response>").expect("prompt has <response>") + "<response>".len();
    let end = p.rfind("</response>").expect("prompt has </response>");
    &p[start..end]
}

impl Generator for Scripted {
    fn generate(
        &mut self,
        requests: &[GenRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Vec<Completion>>, GenerateError> {
        self.calls.push((requests.to_vec(), params.clone()));
        if self.fail {
            return Err("out of memory (scripted)".into());
        }
        let mut out: Vec<Vec<Completion>> = requests
            .iter()
            .map(|r| {
                let n = if self.short_samples { r.n - 1 } else { r.n };
                (0..n)
                    .map(|j| {
                        let (text, finish_reason) = (self.script)(r, j);
                        Completion {
                            token_ids: vec![7; text.split_whitespace().count()],
                            text,
                            finish_reason,
                            prompt_tokens: user_message(r).split_whitespace().count(),
                        }
                    })
                    .collect()
            })
            .collect();
        if self.drop_last_output {
            out.pop();
        }
        Ok(out)
    }
}
