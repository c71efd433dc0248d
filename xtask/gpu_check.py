"""One-script GPU check of tsr against the Python references (`cargo xtask gpu-check`).

    python xtask/gpu_check.py --tsr PATH/TO/tsr --model MODEL [--device cuda] [--out results.json]

MODEL is a Hugging Face folder (config.json, safetensors, tokenizer files) or a .gguf file; a
GGUF is dequantized by transformers and saved once as a float32 Hugging Face folder in the work
folder, and both sides load that folder, so they start from the same weights.

Steps (each timed; a step that fails is reported as failed, the others still run):
  parity  Greedy parity: 3 fixed chat prompts, --parity-tokens new tokens (64), batch 1.
          transformers `generate(do_sample=False)` on the device against
          `tsr generate --chat --greedy --max-batch 1`; per prompt the number of equal leading
          tokens and whether the whole sequences match. f32 must match (a mismatch fails the
          check); bf16 is reported only.
  decode  Decode tokens/s, batch 1, greedy, --tokens new tokens (128), f32 and bf16. tsr: the
          CLI run with --max-new-tokens N and with 1 (--repeats times each, median wall time);
          tokens/s = (tokens of the N run - tokens of the 1 run) / (time difference), which
          cancels process start, model load and prefill. transformers: `generate` in process
          timed the same way after a warm-up. `tsr generate` has no ignore-EOS option, so a
          prompt that asks for a long answer is used and the rates use the tokens actually
          generated (both counts are reported; greedy parity makes them equal in f32).
  dpo     DPO step time: --dpo-pairs synthetic conversational preference pairs (32), batch 4,
          beta 0.1, lr 1e-6, max length 256, no dropout, reference log-probs precomputed,
          --dpo-steps optimizer steps (8). `tsr train-dpo` (seconds/step and tokens/s from its
          metrics.jsonl) against TRL `DPOTrainer` (float32, same settings, in a child process,
          step wall time from trainer callbacks, the device synchronized). Batches differ (tsr
          groups pairs of similar length, TRL draws them at random), so tokens/s is the
          like-for-like figure; s/step is reported too, with and without the first step (which
          carries CUDA warm-up).

Without a GPU the script stops with an error unless --device cpu is given (that runs the same
steps on the CPU, for testing the script; use small --tokens/--dpo-steps there).

Writes every figure, the settings, the versions (Python, torch, transformers, trl, tsr and its
libtorch, the GPU name) and raw timings to --out as JSON, and prints a table. Exit status 0 when
every step ran and f32 greedy parity held, 1 otherwise, 2 for bad arguments or no GPU.
"""

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

PARITY_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers and explain why they are prime.",
]
# Asks for a long answer: `tsr generate` stops at EOS, so a prompt answered in a few tokens would
# measure little decoding.
DECODE_PROMPT = (
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle. "
    "Describe every scene, the weather, the sea and the characters' thoughts at length."
)
DTYPES = {"f32": "float32", "bf16": "bfloat16"}
# The DPO settings shared by both sides (crates/tsr-dpo/benches/dpo_ref.py's, on the device).
DPO = dict(batch_size=4, beta=0.1, learning_rate=1e-6, max_length=256, seed=42)

WORDS = (
    "the model answer question because water energy simple people history between important "
    "example first second result number explain carefully small large city river light sound "
    "through reason always never often during science language value change should could would "
    "process system health market travel school student teacher write read think country world "
    "morning evening garden computer program function data table method paper story music color "
    "animal"
).split()


def die(msg, code=2):
    print(f"gpu_check: error: {msg}", file=sys.stderr)
    sys.exit(code)


def tail(text, n=2000):
    text = text or ""
    return text if len(text) <= n else "..." + text[-n:]


def run_cmd(cmd, env, what):
    """Runs a command; returns (wall seconds, stdout). Raises with its stderr on failure."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(
            f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n"
            f"stderr:\n{tail(p.stderr)}\nstdout:\n{tail(p.stdout)}"
        )
    return dt, p.stdout


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def median(xs):
    return statistics.median(xs) if xs else None


class Check:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work)
        self.device = args.device
        self.cuda = args.device.startswith("cuda")
        import torch

        self.torch = torch
        # Child processes (tsr, the TRL run) see the device the way this process does.
        self.env = dict(os.environ)
        self.env.setdefault("TQDM_DISABLE", "1")
        self.env.setdefault("TOKENIZERS_PARALLELISM", "false")
        torch_lib = str(Path(torch.__file__).parent / "lib")
        if args.add_torch_lib:
            old = self.env.get("LD_LIBRARY_PATH", "")
            self.env["LD_LIBRARY_PATH"] = torch_lib + (os.pathsep + old if old else "")
        self.hf_models = {}

    # ----------------------------------------------------------------- set-up

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def tsr(self, *argv):
        return [self.args.tsr, *map(str, argv)]

    def doctor(self):
        _, out = run_cmd(self.tsr("doctor", "--json"), self.env, "tsr doctor")
        d = json.loads(out)
        if self.cuda and not d.get("cuda_available"):
            raise RuntimeError(
                f"tsr sees no CUDA device (tsr doctor: libtorch {d.get('libtorch')} at "
                f"{d.get('libtorch_lib')}): build tsr against a CUDA libtorch and point "
                "LD_LIBRARY_PATH at its lib folder"
            )
        return d

    def model_dir(self):
        src = Path(self.args.model).expanduser().resolve()
        if src.is_dir() and (src / "config.json").is_file():
            return src, None
        if not (src.is_file() and src.suffix == ".gguf"):
            die(f"--model {src}: neither a Hugging Face folder (with config.json) nor a .gguf file")
        dest = self.work / "hf-model"
        stamp = dest / ".from-gguf.json"
        want = {"gguf": str(src), "size": src.stat().st_size, "mtime": int(src.stat().st_mtime)}
        if stamp.is_file() and json.loads(stamp.read_text()) == want:
            return dest, want
        print(f"gpu_check: converting {src} to a float32 Hugging Face folder {dest}", flush=True)
        import copy

        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        q = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=self.torch.float32)
        # A model loaded from a GGUF refuses save_pretrained: copy its (dequantized) weights
        # into a plain model of the same configuration.
        cfg = copy.deepcopy(q.config)
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        plain = AutoModelForCausalLM.from_config(cfg, dtype=self.torch.float32)
        plain.load_state_dict(q.state_dict(), strict=True)
        plain.generation_config = copy.deepcopy(q.generation_config)
        if dest.exists():
            shutil.rmtree(dest)
        plain.save_pretrained(dest)
        tok.save_pretrained(dest)
        stamp.write_text(json.dumps(want))
        del q, plain
        return dest, want

    # ------------------------------------------------------------ transformers

    def hf(self, dtype):
        if dtype not in self.hf_models:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            torch = self.torch
            tok = AutoTokenizer.from_pretrained(self.model)
            m = AutoModelForCausalLM.from_pretrained(self.model, dtype=getattr(torch, DTYPES[dtype]))
            m.to(self.device).eval()
            self.hf_models[dtype] = (tok, m)
        return self.hf_models[dtype]

    def hf_ids(self, tok, prompt):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False, return_tensors="pt").input_ids.to(self.device)

    def hf_generate(self, dtype, prompt, new_tokens):
        """Greedy batch-1 `generate`; returns (new token ids, seconds)."""
        torch = self.torch
        tok, m = self.hf(dtype)
        ids = self.hf_ids(tok, prompt)
        pad = tok.pad_token_id if tok.pad_token_id is not None else m.generation_config.eos_token_id
        with torch.no_grad():
            self.sync()
            t0 = time.perf_counter()
            out = m.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens, pad_token_id=pad
            )
            self.sync()
            dt = time.perf_counter() - t0
        return out[0, ids.shape[1] :].tolist(), dt

    # --------------------------------------------------------------------- tsr

    def tsr_generate(self, dtype, prompts, new_tokens, tag):
        """`tsr generate` (greedy, chat, batch 1); returns ({prompt id: token ids}, wall seconds)."""
        d = self.work / "generate"
        d.mkdir(parents=True, exist_ok=True)
        pf, of = d / f"{tag}.prompts.jsonl", d / f"{tag}.out.jsonl"
        pf.write_text("".join(json.dumps({"id": i, "prompt": p}) + "\n" for i, p in enumerate(prompts)))
        if of.exists():
            of.unlink()
        dt, _ = run_cmd(
            self.tsr(
                "generate", "--model", self.model, "--prompts", pf, "--chat", "--greedy",
                "--max-new-tokens", new_tokens, "--device", self.device, "--dtype", dtype,
                "--max-batch", 1, "--out", of,
            ),
            self.env,
            f"tsr generate ({dtype}, {new_tokens} tokens)",
        )
        rows = [json.loads(line) for line in of.read_text().splitlines() if line.strip()]
        got = {r["prompt_id"]: r["token_ids"] for r in rows}
        if sorted(got) != list(range(len(prompts))):
            raise RuntimeError(f"tsr generate wrote prompt ids {sorted(got)}, expected 0..{len(prompts) - 1}")
        return got, dt

    # ------------------------------------------------------------------- steps

    def step_parity(self):
        n = self.args.parity_tokens
        out = {"new_tokens": n, "prompts": PARITY_PROMPTS, "dtypes": {}}
        for dtype in self.args.dtypes:
            tsr_ids, tsr_s = self.tsr_generate(dtype, PARITY_PROMPTS, n, f"parity-{dtype}")
            tok, _ = self.hf(dtype)
            rows = []
            for i, p in enumerate(PARITY_PROMPTS):
                hf_ids, _ = self.hf_generate(dtype, p, n)
                t = tsr_ids[i]
                k = common_prefix(hf_ids, t)
                rows.append(
                    dict(
                        prompt=i, hf_tokens=len(hf_ids), tsr_tokens=len(t), equal_prefix=k,
                        match=hf_ids == t, hf_ids=hf_ids, tsr_ids=t,
                        hf_text=tok.decode(hf_ids, skip_special_tokens=True),
                        tsr_text=tok.decode(t, skip_special_tokens=True),
                    )
                )
            out["dtypes"][dtype] = dict(all_match=all(r["match"] for r in rows), prompts=rows, tsr_process_seconds=tsr_s)
        f32 = out["dtypes"].get("f32")
        out["required"] = "f32 sequences equal"
        out["passed"] = None if f32 is None else f32["all_match"]
        return out

    def step_decode(self):
        n, reps = self.args.tokens, self.args.repeats
        if n < 2:
            raise RuntimeError("--tokens must be at least 2")
        out = {"new_tokens": n, "repeats": reps, "prompt": DECODE_PROMPT, "dtypes": {}}
        for dtype in self.args.dtypes:
            # tsr: interleave the short and long runs so that drift hits both alike.
            runs = {1: [], n: []}
            counts = {}
            for r in range(reps):
                for k in (1, n):
                    ids, dt = self.tsr_generate(dtype, [DECODE_PROMPT], k, f"decode-{dtype}-{k}-{r}")
                    runs[k].append(dt)
                    c = len(ids[0])
                    if counts.setdefault(k, c) != c:
                        raise RuntimeError(f"tsr greedy decoding gave {counts[k]} then {c} tokens for the same prompt")
            tsr_row = self.rate(runs, counts, n)
            # transformers, in process, after a warm-up.
            self.hf_generate(dtype, DECODE_PROMPT, min(8, n))
            hf_runs = {1: [], n: []}
            hf_counts = {}
            for r in range(reps):
                for k in (1, n):
                    ids, dt = self.hf_generate(dtype, DECODE_PROMPT, k)
                    hf_runs[k].append(dt)
                    hf_counts.setdefault(k, len(ids))
            hf_row = self.rate(hf_runs, hf_counts, n)
            hf_row["tokens_per_s_including_prefill"] = hf_counts[n] / median(hf_runs[n])
            out["dtypes"][dtype] = dict(
                tsr=tsr_row, hf=hf_row,
                same_token_count=tsr_row["tokens_long"] == hf_row["tokens_long"],
                tsr_over_hf=(tsr_row["tokens_per_s"] / hf_row["tokens_per_s"])
                if tsr_row["tokens_per_s"] and hf_row["tokens_per_s"] else None,
            )
        return out

    @staticmethod
    def rate(runs, counts, n):
        t1, tn = median(runs[1]), median(runs[n])
        dtok, dt = counts[n] - counts[1], tn - t1
        return dict(
            tokens_short=counts[1], tokens_long=counts[n], seconds_short=runs[1], seconds_long=runs[n],
            median_seconds_short=t1, median_seconds_long=tn,
            tokens_per_s=(dtok / dt) if dtok > 0 and dt > 0 else None,
            note=None if dtok > 0 and dt > 0 else "no measurable difference between the runs",
        )

    def write_pairs(self):
        rng = random.Random(20240611)
        words = lambda k: " ".join(w + ("." if i % 12 == 11 else "") for i, w in enumerate(rng.choices(WORDS, k=k)))
        lines = []
        for i in range(self.args.dpo_pairs):
            p, c, r = rng.randrange(10, 60), rng.randrange(30, 150), rng.randrange(30, 150)
            lines.append(
                json.dumps(
                    {
                        "prompt": [{"role": "user", "content": f"Question {i}: {words(p)}?"}],
                        "chosen": [{"role": "assistant", "content": words(c)}],
                        "rejected": [{"role": "assistant", "content": words(r)}],
                    }
                )
            )
        path = self.work / "dpo" / "pairs.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        return path

    def step_dpo(self):
        steps = self.args.dpo_steps
        d = self.work / "dpo"
        pairs = self.write_pairs()
        cfg = d / "dpo.toml"
        cfg.write_text(
            "\n".join(
                [
                    f"batch_size = {DPO['batch_size']}",
                    "gradient_accumulation_steps = 1",
                    f"beta = {DPO['beta']}",
                    'loss_type = "sigmoid"',
                    f"learning_rate = {DPO['learning_rate']}",
                    f"max_length = {DPO['max_length']}",
                    "dropout = 0.0",
                    f"ref_batch_size = {DPO['batch_size']}",
                    'gradient_checkpointing = "off"',
                    f"seed = {DPO['seed']}",
                ]
            )
            + "\n"
        )
        tsr_out = d / "tsr-out"
        wall, _ = run_cmd(
            self.tsr(
                "train-dpo", "--model", self.model, "--pairs", pairs, "--out", tsr_out, "--config", cfg,
                "--device", self.device, "--max-steps", steps, "--overwrite",
            ),
            self.env,
            "tsr train-dpo",
        )
        metrics = [json.loads(x) for x in (tsr_out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        if len(metrics) != steps:
            raise RuntimeError(f"tsr train-dpo wrote {len(metrics)} metric lines, expected {steps}")
        secs = [m["step_seconds"] for m in metrics]
        tokens = [m["tokens/s"] * m["step_seconds"] for m in metrics]
        tsr_row = self.train_row(secs, tokens, [m["loss"] for m in metrics])
        tsr_row["process_seconds"] = wall

        # TRL in a child process (its own CUDA context and allocator, as tsr has).
        child = [
            sys.executable, Path(__file__).resolve(), "--trl-child", "--model", self.model, "--pairs", pairs,
            "--work", d / "trl-out", "--device", self.device, "--dpo-steps", steps, "--tsr", self.args.tsr,
        ]
        env = dict(self.env)
        if ":" in self.device:
            # accelerate trains on the first visible device: make that the chosen one.
            index = int(self.device.split(":")[1])
            visible = [v for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
            env["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
            child[child.index("--device") + 1] = "cuda"
        wall, stdout = run_cmd(list(map(str, child)), env, "TRL DPOTrainer")
        line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"the TRL run printed no RESULT line:\n{tail(stdout)}")
        trl = json.loads(line[len("RESULT ") :])
        trl_row = self.train_row(trl["step_seconds"], None, trl["losses"])
        trl_row["tokens"] = trl["tokens"]
        trl_row["tokens_per_s"] = trl["tokens"] / sum(trl["step_seconds"]) if trl["tokens"] else None
        trl_row["process_seconds"] = wall
        ratio = lambda a, b: a / b if a and b else None
        return dict(
            settings=dict(DPO, gradient_accumulation_steps=1, dropout=0.0, pairs=self.args.dpo_pairs, steps=steps,
                          dtype="f32", pair_format="conversational"),
            tsr=tsr_row,
            trl=trl_row,
            trl_over_tsr_seconds_per_step=ratio(trl_row["seconds_per_step"], tsr_row["seconds_per_step"]),
            trl_over_tsr_seconds_per_step_after_first=ratio(
                trl_row["seconds_per_step_after_first"], tsr_row["seconds_per_step_after_first"]
            ),
            tsr_over_trl_tokens_per_s=ratio(tsr_row["tokens_per_s"], trl_row["tokens_per_s"]),
        )

    @staticmethod
    def train_row(secs, tokens, losses):
        row = dict(
            steps=len(secs), step_seconds=secs, seconds_per_step=sum(secs) / len(secs) if secs else None,
            seconds_per_step_after_first=(sum(secs[1:]) / len(secs[1:])) if len(secs) > 1 else None, losses=losses,
        )
        if tokens is not None:
            row["tokens"] = round(sum(tokens))
            row["tokens_per_s"] = sum(tokens) / sum(secs) if sum(secs) > 0 else None
        return row

    # --------------------------------------------------------------------- run

    def run(self):
        torch = self.torch
        import transformers

        try:
            import trl

            trl_version = trl.__version__
        except ImportError:
            trl_version = None
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        fp32 = getattr(getattr(torch.backends.cuda, "matmul", None), "fp32_precision", None)
        report = dict(
            script="xtask/gpu_check.py",
            started=started,
            device=self.device,
            gpu=torch.cuda.get_device_name(self.device) if self.cuda else None,
            versions=dict(
                python=platform.python_version(), torch=torch.__version__, torch_cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version() if self.cuda else None,
                transformers=transformers.__version__, trl=trl_version,
            ),
            torch_settings=dict(
                cuda_matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32 if self.cuda else None,
                cuda_matmul_fp32_precision=fp32 if self.cuda else None,
                cpu_threads=torch.get_num_threads(),
            ),
            host=dict(machine=platform.machine(), cpus=os.cpu_count()),
            settings=dict(
                parity_tokens=self.args.parity_tokens, tokens=self.args.tokens, repeats=self.args.repeats,
                dpo_steps=self.args.dpo_steps, dpo_pairs=self.args.dpo_pairs, dtypes=self.args.dtypes,
                steps=self.args.steps, tsr=str(Path(self.args.tsr).resolve()),
            ),
            steps={},
        )
        try:
            report["tsr_doctor"] = self.doctor()
        except Exception as e:  # noqa: BLE001 - reported, then stop: nothing can run without tsr
            report["tsr_doctor"] = dict(error=str(e))
            return self.finish(report, t0, fatal=f"tsr does not run: {e}")
        model, converted = self.model_dir()
        self.model = str(model)
        report["model"] = dict(path=self.model, given=self.args.model, converted_from_gguf=converted)
        for name in self.args.steps:
            print(f"gpu_check: {name} ...", flush=True)
            s0 = time.perf_counter()
            try:
                result = getattr(self, f"step_{name}")()
                report["steps"][name] = dict(ok=True, seconds=time.perf_counter() - s0, result=result)
            except Exception as e:  # noqa: BLE001 - a failed step is reported, the rest still run
                report["steps"][name] = dict(
                    ok=False, seconds=time.perf_counter() - s0, error=str(e), traceback=tail(traceback.format_exc(), 4000)
                )
            print(f"gpu_check: {name}: {'ok' if report['steps'][name]['ok'] else 'FAILED'} "
                  f"in {time.perf_counter() - s0:.1f} s", flush=True)
        return self.finish(report, t0)

    def finish(self, report, t0, fatal=None):
        failures = [f"{k}: {v['error'].splitlines()[0]}" for k, v in report["steps"].items() if not v["ok"]]
        parity = report["steps"].get("parity")
        if parity and parity["ok"] and parity["result"]["passed"] is False:
            failures.append("parity: f32 greedy tokens differ between tsr and transformers")
        if fatal:
            failures.insert(0, fatal)
        report["failures"] = failures
        report["passed"] = not failures
        report["seconds"] = time.perf_counter() - t0
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print_table(report)
        print(f"\ngpu_check: results written to {out}")
        if failures:
            print("gpu_check: FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
            return 1
        print("gpu_check: all steps ran; f32 greedy parity holds")
        return 0


def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def print_table(r):
    v = r["versions"]
    print()
    print(f"tsr GPU check on {r['device']}" + (f" ({r['gpu']})" if r["gpu"] else ""))
    print(f"  torch {v['torch']} (CUDA {v['torch_cuda']}), transformers {v['transformers']}, trl {v['trl']}; "
          f"tsr {r.get('tsr_doctor', {}).get('tsr', '?')} with libtorch {r.get('tsr_doctor', {}).get('libtorch', '?')}")
    if "model" in r:
        print(f"  model {r['model']['path']}")
    for name, s in r["steps"].items():
        if not s["ok"]:
            print(f"\n{name}: FAILED after {s['seconds']:.1f} s: {s['error']}")
            continue
        res = s["result"]
        if name == "parity":
            print(f"\nGreedy parity, {res['new_tokens']} new tokens, batch 1 ({s['seconds']:.1f} s)")
            print(f"  {'dtype':<6}{'prompt':>7}{'HF tokens':>11}{'tsr tokens':>12}{'equal prefix':>14}  match")
            for dtype, d in res["dtypes"].items():
                for p in d["prompts"]:
                    print(f"  {dtype:<6}{p['prompt']:>7}{p['hf_tokens']:>11}{p['tsr_tokens']:>12}"
                          f"{p['equal_prefix']:>14}  {'yes' if p['match'] else 'NO'}")
                print(f"  {dtype}: {'all match' if d['all_match'] else 'differ'}"
                      + ("" if dtype == "f32" else " (reported, not required)"))
        elif name == "decode":
            print(f"\nDecode tokens/s, batch 1, greedy, up to {res['new_tokens']} new tokens, median of "
                  f"{res['repeats']} ({s['seconds']:.1f} s)")
            print(f"  {'dtype':<6}{'tsr tok/s':>11}{'HF tok/s':>10}{'tsr/HF':>8}{'tokens tsr/HF':>15}")
            for dtype, d in res["dtypes"].items():
                print(f"  {dtype:<6}{fmt(d['tsr']['tokens_per_s']):>11}{fmt(d['hf']['tokens_per_s']):>10}"
                      f"{fmt(d['tsr_over_hf'], '.2f'):>8}"
                      f"{str(d['tsr']['tokens_long']) + '/' + str(d['hf']['tokens_long']):>15}")
        elif name == "dpo":
            st = res["settings"]
            print(f"\nDPO, {st['steps']} steps of {st['batch_size']} pairs, max length {st['max_length']}, f32 "
                  f"({s['seconds']:.1f} s)")
            print(f"  {'side':<6}{'s/step':>9}{'s/step after 1st':>18}{'tokens/s':>10}")
            for side in ("tsr", "trl"):
                t = res[side]
                print(f"  {side:<6}{fmt(t['seconds_per_step'], '.3f'):>9}"
                      f"{fmt(t['seconds_per_step_after_first'], '.3f'):>18}{fmt(t['tokens_per_s']):>10}")
            print(f"  TRL/tsr s/step {fmt(res['trl_over_tsr_seconds_per_step'], '.2f')} "
                  f"(after the 1st step {fmt(res['trl_over_tsr_seconds_per_step_after_first'], '.2f')}), "
                  f"tsr/TRL tokens/s {fmt(res['tsr_over_trl_tokens_per_s'], '.2f')}")


# ------------------------------------------------------------------ TRL child


def trl_child(args):
    """TRL DPOTrainer on the pairs; prints `RESULT {json}` (dpo_ref.py's settings, on the device)."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    cuda = args.device.startswith("cuda")

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self._t = [], None

        def on_step_begin(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self._t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self._t)

    torch.manual_seed(DPO["seed"])
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args.model)
    data = load_dataset("json", data_files=str(args.pairs), split="train")
    cfg = DPOConfig(
        output_dir=str(args.work),
        per_device_train_batch_size=DPO["batch_size"],
        gradient_accumulation_steps=1,
        max_steps=args.dpo_steps,
        learning_rate=DPO["learning_rate"],
        beta=DPO["beta"],
        loss_type=["sigmoid"],
        max_length=DPO["max_length"],
        precompute_ref_log_probs=True,
        precompute_ref_batch_size=DPO["batch_size"],
        use_cpu=not cuda,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=DPO["seed"],
        dataloader_num_workers=0,
    )
    timer = StepTimer()
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok, callbacks=[timer])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print("RESULT " + json.dumps(dict(
        step_seconds=timer.seconds, tokens=getattr(trainer, "_total_train_tokens", None), losses=losses,
        device=str(next(model.parameters()).device),
    )), flush=True)


# ------------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tsr", required=True, help="the tsr binary")
    ap.add_argument("--model", required=True, help="Hugging Face model folder, or a .gguf file (converted once)")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: for testing the script) [cuda]")
    ap.add_argument("--out", help="JSON results [WORK/results.json]")
    ap.add_argument("--work", help="work folder (prompts, outputs, converted model) [a new temporary folder]")
    ap.add_argument("--steps", default="parity,decode,dpo", help="comma-separated subset of parity,decode,dpo")
    ap.add_argument("--dtypes", default="f32,bf16", help="comma-separated subset of f32,bf16 for parity and decode")
    ap.add_argument("--parity-tokens", type=int, default=64, help="new tokens in the parity step [64]")
    ap.add_argument("--tokens", type=int, default=128, help="new tokens in the decode step [128]")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per length in the decode step [3]")
    ap.add_argument("--dpo-steps", type=int, default=8, help="DPO optimizer steps on each side [8]")
    ap.add_argument("--dpo-pairs", type=int, default=32, help="synthetic preference pairs [32]")
    ap.add_argument("--no-torch-lib", dest="add_torch_lib", action="store_false",
                    help="do not put this Python's torch/lib first on tsr's LD_LIBRARY_PATH")
    ap.add_argument("--trl-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pairs", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.trl_child:
        return trl_child(args)

    args.steps = [s for s in args.steps.split(",") if s]
    args.dtypes = [s for s in args.dtypes.split(",") if s]
    if bad := [s for s in args.steps if s not in ("parity", "decode", "dpo")]:
        die(f"unknown --steps {bad}")
    if bad := [s for s in args.dtypes if s not in DTYPES]:
        die(f"unknown --dtypes {bad}")
    if args.device != "cpu" and not (args.device == "cuda" or args.device.startswith("cuda:")):
        die(f"--device {args.device}: expected cuda, cuda:N or cpu")
    for k in ("parity_tokens", "tokens", "repeats", "dpo_steps", "dpo_pairs"):
        if getattr(args, k) < 1:
            die(f"--{k.replace('_', '-')} must be at least 1")
    if not (Path(args.tsr).is_file() and os.access(args.tsr, os.X_OK)):
        die(f"--tsr {args.tsr}: not an executable file")
    args.tsr = str(Path(args.tsr).resolve())

    import torch

    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            die(
                f"torch.cuda.is_available() is False (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda}): this check needs a GPU; pass --device cpu only to test the script"
            )
        if ":" in args.device and int(args.device.split(":")[1]) >= torch.cuda.device_count():
            die(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s)")

    args.work = str(Path(args.work or tempfile.mkdtemp(prefix="tsr-gpu-check-")).resolve())
    Path(args.work).mkdir(parents=True, exist_ok=True)
    args.out = str(Path(args.out or Path(args.work) / "results.json").resolve())
    print(f"gpu_check: work folder {args.work}", flush=True)
    import transformers

    transformers.logging.set_verbosity_error()
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
