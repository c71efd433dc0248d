"""Reference side of tsr-model's prefill benchmark: transformers' forward on the same input.

Spawned by `benches/prefill.rs` (interpreter from TSR_REFERENCE_PYTHON). Prints one JSON line:
{"tokens": N, "median_s": S, "tokens_per_s": R, "threads": T, "source": ...}.

    python prefill_ref.py --ids IDS.json (--gguf FILE | --config CONFIG.json) [--iters N]
    python prefill_ref.py --serve (--gguf FILE | --config CONFIG.json)

`--serve` loads once, prints {"ready": ...}, then answers each stdin line `run IDS.json` with
{"s": seconds} for one forward on those ids (so the caller can interleave its own runs with the
reference's and both see the same machine load); `quit` ends it.

`--gguf` loads the checkpoint with transformers' own GGUF loader (dequantized to float32);
`--config` builds a random-weight model of that HF config (same shapes, same cost).
"""

import argparse
import json
import pathlib
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--gguf")
    ap.add_argument("--config")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.gguf:
        path = pathlib.Path(args.gguf)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     dtype=torch.float32)
        source = f"gguf:{path.name}"
    else:
        config = AutoConfig.from_pretrained(args.config)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        source = "random-config"
    model.eval()
    load_s = time.perf_counter() - t0
    if args.serve:
        serve(model, source, load_s)
        return
    ids = torch.tensor(json.loads(pathlib.Path(args.ids).read_text()), dtype=torch.long)
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            t = time.perf_counter()
            logits = model(input_ids=ids, attention_mask=mask).logits
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
    assert logits.shape[:2] == ids.shape
    median = statistics.median(times)
    print(json.dumps({"tokens": ids.numel(), "median_s": median, "tokens_per_s": ids.numel() / median,
                      "threads": torch.get_num_threads(), "source": source, "load_s": load_s,
                      "attn": model.config._attn_implementation}))


def serve(model, source, load_s):
    import sys
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "source": source,
                      "load_s": load_s, "attn": model.config._attn_implementation}), flush=True)
    cache = {}
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        path = cmd[1]
        if path not in cache:
            cache[path] = torch.tensor(json.loads(pathlib.Path(path).read_text()), dtype=torch.long)
        ids = cache[path]
        with torch.inference_mode():
            t = time.perf_counter()
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            s = time.perf_counter() - t
        assert logits.shape[:2] == ids.shape
        print(json.dumps({"s": s}), flush=True)


if __name__ == "__main__":
    main()
