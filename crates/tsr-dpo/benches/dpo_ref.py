"""TRL side of the `dpo_train` benchmark: DPOTrainer on the same pairs and settings as tsr.

Usage (the Rust bench calls it): python dpo_ref.py PAIRS.jsonl HF_MODEL_DIR OUT_DIR [PLAN.json]
With PLAN.json (a list of batches, each a list of 0-based pair line numbers, as tsr trained them)
TRL trains on exactly those batches in that order: the pairs are laid out in plan order and read
by a sequential sampler. Without it TRL draws its own random batches.
Prints one line `RESULT {json}` with training tokens/s (non-padding tokens of the training steps
divided by the summed wall time of those steps; the reference log-probs are precomputed in
DPOTrainer's constructor and not counted), steps, and the process's peak RSS.
"""

import json
import resource
import sys
import time

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer


class StepTimer(TrainerCallback):
    def __init__(self):
        self.seconds = []
        self._t = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._t)


class ReplayDPOTrainer(DPOTrainer):
    """DPOTrainer reading its training set in order (the set is already in the replayed plan's order)."""

    def _get_train_sampler(self, train_dataset=None):
        return torch.utils.data.SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)


def main():
    pairs, model_dir, out_dir = sys.argv[1:4]
    plan = json.load(open(sys.argv[4])) if len(sys.argv) > 4 else None
    torch.manual_seed(42)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    data = load_dataset("json", data_files=pairs, split="train")
    if plan is not None:
        if any(len(b) != 4 for b in plan):
            sys.exit("the plan's batches must hold 4 pairs (TRL's per-device batch here)")
        data = data.select([i for batch in plan for i in batch])
    args = DPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        learning_rate=1e-6,
        beta=0.1,
        loss_type=["sigmoid"],
        max_length=256,
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=4,
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=42,
        dataloader_num_workers=0,
    )
    timer = StepTimer()
    cls = ReplayDPOTrainer if plan is not None else DPOTrainer
    trainer = cls(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[timer])
    if plan is not None and len(trainer.train_dataset) != len(data):
        sys.exit(f"TRL dropped {len(data) - len(trainer.train_dataset)} pairs: the plan cannot be replayed")
    trainer.train()
    tokens = trainer._total_train_tokens
    secs = sum(timer.seconds)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print("RESULT " + json.dumps({
        "tokens": tokens, "seconds": secs, "tokens_per_s": tokens / secs, "steps": len(timer.seconds),
        "peak_rss_mb": peak_kb / 1024.0, "losses": losses, "threads": torch.get_num_threads(),
        "replayed_plan": plan is not None,
    }), flush=True)


if __name__ == "__main__":
    main()
