"""Can libtorch's weight formats speed up CPU decoding here? Times the matrix-vector products of
one SmolLM2-135M decode step (30 layers of q, k, v, o, gate, up, down and the 49,152 x 576 LM
head; batch 1) with the weights in f32 (F.linear), bf16 (F.linear on bf16 tensors), bf16 packed
for oneDNN (torch.ops.mkldnn._reorder_linear_weight once, then torch.ops.mkldnn._linear_pointwise:
what tsr's `set_weight_dtype(Kind::BFloat16)` calls on a CPU with native bf16 through its C++
shim), fp16 packed for FBGEMM (torch.fbgemm_linear_fp16_weight_fp32_activation on f32 activations: what
tsr's `set_weight_dtype(Kind::Half)` calls on CPU through its C++ shim) and int8 weight-only
(torch._weight_int8pack_mm, per-output-channel scales: the kernel an int8 format in tsr would
call through tch's `internal_weight_int8pack_mm`).

Usage: python weight_formats_ref.py [--threads N] [--rows M]
Prints one line per format: microseconds per step, decode tokens/s this bounds, ratio to f32,
and the largest error of the fp16 and int8 products against f32 on the LM head.
"""

import argparse
import time
import warnings

import torch


def shapes():
    h, kv, i, layers, vocab = 576, 192, 1536, 30, 49152
    per_layer = [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]
    return per_layer * layers + [(vocab, h)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    weights = [torch.randn(n, k) * 0.02 for n, k in shapes()]
    xs = {k: torch.randn(a.rows, k) for _, k in shapes()}
    int8 = []
    for w in weights:
        s = w.abs().amax(1) / 127
        int8.append((torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8), s))
    bf16 = [w.bfloat16() for w in weights]
    bf16_packed = [torch.ops.mkldnn._reorder_linear_weight(w) for w in bf16]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "deprecated and will be removed in a future release"
        fp16 = [torch.fbgemm_pack_gemm_matrix_fp16(w) for w in weights]
    xs_bf16 = {k: x.bfloat16() for k, x in xs.items()}

    def step_f32():
        for w in weights:
            torch.nn.functional.linear(xs[w.shape[1]], w)

    def step_bf16():
        for w in bf16:
            torch.nn.functional.linear(xs_bf16[w.shape[1]], w)

    def step_bf16_packed():
        for w, p in zip(bf16, bf16_packed):
            torch.ops.mkldnn._linear_pointwise(xs_bf16[w.shape[1]], p, None, "none", [], "")

    def step_fp16():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for w, p in zip(weights, fp16):
                torch.fbgemm_linear_fp16_weight_fp32_activation(xs[w.shape[1]], p, None)

    def step_int8():
        for q, s in int8:
            torch._weight_int8pack_mm(xs[q.shape[1]], q, s)

    def best(f):
        f()
        times = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return min(times)

    base = best(step_f32)
    formats = [
        ("f32", step_f32),
        ("bf16", step_bf16),
        ("bf16 oneDNN packed", step_bf16_packed),
        ("fp16 FBGEMM", step_fp16),
        ("int8 weight-only", step_int8),
    ]
    for name, f in formats:
        t = best(f) if f is not step_f32 else base
        print(f"{name:>17}: {t * 1e6:9.0f} us/step  {1 / t:7.1f} steps/s  {base / t:5.2f}x f32")
    q, s = int8[-1]
    x = xs[576]
    exact = x @ weights[-1].T
    err = (torch._weight_int8pack_mm(x, q, s) - exact).abs().max().item()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y16 = torch.fbgemm_linear_fp16_weight_fp32_activation(x, fp16[-1], None)
    err16 = (y16 - exact).abs().max().item()
    print(
        f"LM-head max abs error vs f32: fp16 {err16:.3g}, int8 {err:.3g}; "
        f"torch {torch.__version__}, {a.threads} thread(s), rows {a.rows}"
    )


if __name__ == "__main__":
    main()
