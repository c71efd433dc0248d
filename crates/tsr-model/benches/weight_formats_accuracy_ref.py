"""How close to f32 does each CPU weight format decode SmolLM2-135M-Instruct? transformers only,
no tsr: every nn.Linear of the decoder and the LM head is swapped for the format's product, then
the f32 model's greedy continuations of a few chat prompts are scored under each format.

Formats: bf16 (F.linear on bf16-rounded activations and weights), fp16 packed for FBGEMM
(torch.fbgemm_linear_fp16_weight_fp32_activation: what tsr's `set_weight_dtype(Kind::Half)` calls
on CPU), and FBGEMM's int8 product (torch.fbgemm_linear_int8_weight_fp32_activation: per-tensor
int8 weights, activations quantized per call).

Usage: python weight_formats_accuracy_ref.py --gguf PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf
       [--tokens 48] [--threads 2]
Prints per format: the largest and the mean absolute difference of a generated token's log-prob
from f32's, and how many prompts keep f32's greedy continuation exactly.
"""

import argparse
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Explain photosynthesis in two sentences.",
    "List three prime numbers.",
    "How do I sort a list in Python?",
]


class Bf16(torch.nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = w.bfloat16(), b

    def forward(self, x):
        y = torch.nn.functional.linear(x.bfloat16(), self.w).float()
        return y if self.b is None else y + self.b


class PackedFp16(torch.nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.p, self.b = torch.fbgemm_pack_gemm_matrix_fp16(w), b

    def forward(self, x):
        return torch.fbgemm_linear_fp16_weight_fp32_activation(x, self.p, self.b)


class Int8(torch.nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.q, self.col, self.scale, self.zero = torch.fbgemm_linear_quantize_weight(w)
        self.p = torch.fbgemm_pack_quantized_matrix(self.q)
        self.b = b if b is not None else torch.zeros(w.shape[0])

    def forward(self, x):
        return torch.fbgemm_linear_int8_weight_fp32_activation(
            x, self.q, self.p, self.col, self.scale, self.zero, self.b
        )


def convert(model, fmt):
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    b = None if child.bias is None else child.bias.data
                    setattr(parent, name, fmt(child.weight.data, b))
    model.lm_head = fmt(model.lm_head.weight.data.clone(), None)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    warnings.filterwarnings("ignore")  # FBGEMM's "deprecated" warnings
    torch.set_num_threads(a.threads)
    gguf = Path(a.gguf)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    def load():
        return AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        ).eval()

    base = load()
    prompts = []
    for p in PROMPTS:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt"
        )
        prompts.append(ids if isinstance(ids, torch.Tensor) else ids["input_ids"])
    with torch.no_grad():
        greedy = [base.generate(i, max_new_tokens=a.tokens, do_sample=False) for i in prompts]

        def token_logprobs(model, seq, n_prompt):
            lp = model(seq).logits.log_softmax(-1)[0, n_prompt - 1 : -1]
            return lp.gather(-1, seq[0, n_prompt:, None])

        for name, fmt in [("bf16", Bf16), ("fp16 FBGEMM", PackedFp16), ("int8 FBGEMM", Int8)]:
            model = convert(load(), fmt)
            gaps = torch.cat(
                [
                    (token_logprobs(base, s, i.shape[1]) - token_logprobs(model, s, i.shape[1])).abs()
                    for s, i in zip(greedy, prompts)
                ]
            )
            same = sum(
                torch.equal(model.generate(i, max_new_tokens=a.tokens, do_sample=False), s)
                for i, s in zip(prompts, greedy)
            )
            print(
                f"{name:>12}: log-prob gap max {gaps.max().item():.4f} mean {gaps.mean().item():.5f} "
                f"over {gaps.numel()} tokens; greedy continuation kept {same}/{len(prompts)}"
            )
    print(f"torch {torch.__version__}, {a.threads} thread(s)")


if __name__ == "__main__":
    main()
