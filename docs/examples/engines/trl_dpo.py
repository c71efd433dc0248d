"""One DPO stage of a tsr run, trained by TRL (the `[backend] train = "command"` trainer).

tsr runs this through `[backend.trainer].command`, for example

    python docs/examples/engines/trl_dpo.py --model {init} --data {data} --settings {settings} \
        --out {out} --metrics {metrics} --seed {seed}

or, on several GPUs, `accelerate launch [--config_file ...] docs/examples/engines/trl_dpo.py ...`.

Inputs written by tsr:
  --model     the stage's init (and reference) model, a Hugging Face folder
  --data      the stage's pairs as TRL's conversational preference JSON lines:
              {"prompt": [user message], "chosen": [assistant message], "rejected": [...]}
  --settings  the run's resolved `[dpo]` section as JSON (tsr-dpo's DpoConfig)
Outputs read by tsr:
  --out       the trained model (save_pretrained + tokenizer); tsr checks that it loads
  --metrics   JSON: {"log_history": TRL's per-step logs, "tokens": tokens trained (TRL's
              num_tokens), "notes": [settings that did not map onto TRL]}

Mapping of tsr's settings onto DPOConfig: beta, loss_type (sigmoid, ipo, hinge as TRL names them),
label_smoothing, learning_rate, lr_schedule (linear and cosine end at 0 in TRL, not at
final_learning_rate: noted), warmup_steps, weight_decay, adam_*, max_grad_norm, batch_size ->
per_device_train_batch_size, gradient_accumulation_steps, epochs, max_steps, dropout (0: TRL's
disable_dropout; otherwise the model's dropout fields), max_length, gradient_checkpointing, sft_weight (an added
`sft` loss of that weight), lora (PEFT's LoraConfig: r, lora_alpha, target_modules; TRL then takes the
reference from the same model with the adapters disabled; the adapter is saved to `OUT/adapter` and the
merged model to `OUT`, as tsr does).
Anything tsr has that TRL lacks is listed in the metrics' notes.
"""

import argparse
import json
import os
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--settings", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    a = ap.parse_args()

    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    s = json.load(open(a.settings))
    notes = []
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    dropout = float(s.get("dropout", 0.0))
    if dropout > 0:
        for key in ("attention_dropout", "hidden_dropout", "dropout"):
            if hasattr(model.config, key):
                setattr(model.config, key, dropout)
    schedule = s.get("lr_schedule", "linear")
    final_lr = float(s.get("final_learning_rate", 0.0))
    if schedule != "constant" and final_lr > 0:
        notes.append(f"lr_schedule {schedule} ends at 0 in TRL, not at final_learning_rate {final_lr}")
    # tsr's `auto` checkpoints from 1B parameters (tsr_dpo::GradientCheckpointing).
    checkpointing = s.get("gradient_checkpointing", "auto")
    if checkpointing == "auto":
        checkpointing = "on" if model.num_parameters() >= 1_000_000_000 else "off"
    if checkpointing == "selective":
        notes.append("gradient_checkpointing selective: transformers recomputes whole layers (as tsr's \"on\")")
        checkpointing = "on"
    loss = s.get("loss_type", "sigmoid")
    sft_weight = float(s.get("sft_weight", 0.0))
    for key in ("logprob_chunk_tokens", "bucket_window", "ref_batch_size", "checkpoint_every", "truncation"):
        if key in s:
            notes.append(f"{key} is a tsr setting without a TRL equivalent: ignored")
    peft_config = None
    lora = s.get("lora")
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=int(lora["r"]),
            lora_alpha=float(lora["alpha"]),
            target_modules=list(lora["targets"]),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
    data = load_dataset("json", data_files=a.data, split="train")
    with tempfile.TemporaryDirectory() as work:
        args = DPOConfig(
            output_dir=os.path.join(work, "run"),
            beta=float(s.get("beta", 0.1)),
            loss_type=[loss] + (["sft"] if sft_weight > 0 else []),
            loss_weights=[1.0] + ([sft_weight] if sft_weight > 0 else []),
            label_smoothing=float(s.get("label_smoothing", 0.0)),
            disable_dropout=dropout == 0,
            learning_rate=float(s.get("learning_rate", 1e-6)),
            lr_scheduler_type=schedule,
            warmup_steps=int(s.get("warmup_steps", 0)),
            weight_decay=float(s.get("weight_decay", 0.0)),
            adam_beta1=float(s.get("adam_beta1", 0.9)),
            adam_beta2=float(s.get("adam_beta2", 0.999)),
            adam_epsilon=float(s.get("adam_epsilon", 1e-8)),
            max_grad_norm=float(s.get("max_grad_norm", 1.0)),
            per_device_train_batch_size=int(s.get("batch_size", 1)),
            gradient_accumulation_steps=int(s.get("gradient_accumulation_steps", 1)),
            num_train_epochs=float(s.get("epochs", 1)),
            max_steps=int(s["max_steps"]) if s.get("max_steps") else -1,
            max_length=int(s.get("max_length", 1024)),
            gradient_checkpointing=checkpointing == "on",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=a.seed % 2**32,  # tsr's seeds are 64-bit; numpy takes 32
            use_cpu=a.cpu or not torch.cuda.is_available(),
        )
        trainer = DPOTrainer(
            model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config
        )
        trainer.train()
        # TRL counts the tokens it trained on (`num_tokens`, cumulative over the steps).
        tokens = max((int(e.get("num_tokens", 0)) for e in trainer.state.log_history), default=0)
        if peft_config is None:
            trainer.save_model(a.out)
        elif trainer.is_world_process_zero():
            trained = trainer.accelerator.unwrap_model(trainer.model)
            trained.save_pretrained(os.path.join(a.out, "adapter"))
            trained.merge_and_unload().save_pretrained(a.out)
        if trainer.is_world_process_zero():
            tok.save_pretrained(a.out)
            # The pickled TrainingArguments name this run's temporary folder: not part of the model.
            args_file = os.path.join(a.out, "training_args.bin")
            if os.path.exists(args_file):
                os.remove(args_file)
            with open(a.metrics, "w") as f:
                json.dump({"log_history": trainer.state.log_history, "tokens": tokens, "notes": notes}, f)


if __name__ == "__main__":
    main()
