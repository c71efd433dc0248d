//! Another project's model trained with tsr-dpo.
//!
//! The model is this crate's own: a token embedding, one tanh layer and an output projection
//! (a "previous token -> next token" model, nothing from tsr-model). It implements
//! `tsr_dpo::Policy` (summed completion log-probs of a batch), and `tsr_dpo::train_policy` trains
//! it with DPO on pairs whose chosen completion is `[7, 7]` and rejected `[3, 4]`: afterwards the
//! model must prefer the chosen completions (positive reward margin, full reward accuracy). The
//! process exits non-zero otherwise, so the test that runs it can fail.

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use tsr_dpo::{train_policy, DpoConfig, IdPair, LrSchedule, Policy};

const VOCAB: i64 = 16;

struct TinyLm {
    vs: nn::VarStore,
    embed: nn::Embedding,
    hidden: nn::Linear,
    out: nn::Linear,
}

impl TinyLm {
    fn new(seed: i64) -> Self {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let embed = nn::embedding(&root / "embed", VOCAB, 16, Default::default());
        let hidden = nn::linear(&root / "hidden", 16, 16, Default::default());
        let out = nn::linear(&root / "out", 16, VOCAB, Default::default());
        TinyLm {
            vs,
            embed,
            hidden,
            out,
        }
    }
}

impl Policy for TinyLm {
    fn completion_logps(
        &mut self,
        ids: &Tensor,
        _attention: &Tensor,
        completion: &Tensor,
    ) -> tsr_dpo::Result<Tensor> {
        let t = ids.size()[1];
        let prev = ids.narrow(1, 0, t - 1);
        let next = ids.narrow(1, 1, t - 1);
        let logits = self
            .out
            .forward(&self.hidden.forward(&self.embed.forward(&prev)).tanh());
        let logp = logits.log_softmax(-1, Kind::Float);
        let tok = logp.gather(2, &next.unsqueeze(2), false).squeeze_dim(2);
        let mask = completion.narrow(1, 1, t - 1).to_kind(Kind::Float);
        Ok((tok * mask).sum_dim_intlist(1, false, Kind::Float))
    }

    fn trainable(&self) -> Vec<(String, Tensor)> {
        self.vs.variables().into_iter().collect()
    }
}

fn main() {
    let pairs: Vec<IdPair> = (1..9)
        .map(|p| IdPair {
            prompt: vec![p, (p * 3) % VOCAB],
            chosen: vec![7, 7],
            rejected: vec![3, 4],
        })
        .collect();
    let cfg = DpoConfig {
        beta: 0.1,
        learning_rate: 0.05,
        lr_schedule: LrSchedule::Constant,
        batch_size: 4,
        gradient_accumulation_steps: 1,
        epochs: 6,
        dropout: 0.0,
        seed: 3,
        ..DpoConfig::default()
    }
    .validate()
    .expect("valid settings");
    let mut model = TinyLm::new(0);
    let steps = train_policy(&mut model, None, &pairs, &cfg, cfg.loss(), 0, |s| {
        println!(
            "step {:2} loss {:.4} margin {:+.4} accuracy {:.2}",
            s.step, s.stats.loss, s.stats.rewards_margins, s.stats.rewards_accuracies
        );
    })
    .expect("training");
    let (first, last) = (&steps[0].stats, &steps[steps.len() - 1].stats);
    let learned =
        last.rewards_margins > 0.5 && last.rewards_accuracies == 1.0 && last.loss < first.loss;
    println!(
        "external-dpo: {} steps, loss {:.4} -> {:.4}, margin {:+.4} -> {:+.4}: {}",
        steps.len(),
        first.loss,
        last.loss,
        first.rewards_margins,
        last.rewards_margins,
        if learned { "learned" } else { "DID NOT LEARN" }
    );
    if !learned {
        std::process::exit(1);
    }
}
