"""Reference timings for benches/generate.rs: transformers `generate` on SmolLM2-135M-Instruct,
float32 on CPU, the same GGUF tsr loads (dequantized by transformers via `gguf_file=`).

    python generate_ref.py GGUF_PATH [--threads 2] [--tokens 128]

Prints one JSON object: for each scenario the generated tokens, seconds and tokens/s.
  sampled: 2 chat prompts x 7 samples (num_return_sequences=7, batch 14), exactly `tokens` new
           tokens each (min_new_tokens = max_new_tokens, so EOS cannot end a row early),
           T=0.7, top_p=0.9, top_k disabled;
  greedy:  batch 1, exactly `tokens` new tokens, do_sample=False.
Each scenario runs once untimed (warm-up, 8 tokens) before the timed run.
"""

import argparse
import json
import pathlib
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a refrigerator works to a ten-year-old.",
]

ap = argparse.ArgumentParser()
ap.add_argument("gguf")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--tokens", type=int, default=128)
ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

gguf = pathlib.Path(args.gguf)
tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
tok.padding_side = "left"
if tok.pad_token_id is None:
    tok.pad_token = tok.eos_token
dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
model.eval()


def encode(prompts):
    texts = [
        tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    return tok(texts, add_special_tokens=False, return_tensors="pt", padding=True)


def run(batch, n, new, **kw):
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model.generate(
            **batch, max_new_tokens=new, min_new_tokens=new, num_return_sequences=n,
            pad_token_id=tok.pad_token_id, **kw,
        )
        dt = time.perf_counter() - t0
    generated = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
    return dict(tokens=generated, seconds=dt, tokens_per_s=generated / dt)


sampled_kw = dict(do_sample=True, temperature=0.7, top_p=0.9, top_k=None)
greedy_kw = dict(do_sample=False)
both = encode(PROMPTS)
one = encode(PROMPTS[:1])
run(both, 7, 8, **sampled_kw)
sampled = run(both, 7, args.tokens, **sampled_kw)
run(one, 1, 8, **greedy_kw)
greedy = run(one, 1, args.tokens, **greedy_kw)
print(json.dumps(dict(threads=args.threads, dtype=args.dtype, sampled=sampled, greedy=greedy)))
