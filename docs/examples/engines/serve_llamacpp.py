"""Serve a GGUF with llama.cpp's HTTP server (the `xllamacpp` wheel) on 127.0.0.1.

Usage: python serve_llamacpp.py MODEL.gguf [--port 0] [--parallel 4] [--threads 2]
                                [--ctx-per-slot 2048] [--seed 42]

Prints one line `listening http://127.0.0.1:PORT` once the model is loaded (`--port 0`: a port
picked by the OS), then serves until it gets SIGTERM/SIGINT or its stdin closes, so the server
dies with the process that started it (a test, or `tsr iterate` through `[backend.serve]`), even
when that process is killed with SIGKILL.

The tests use it (xllamacpp is installed by `cargo xtask engines`, also part of `cargo xtask
test`), and it serves as the `[backend.serve]` command of docs/scaling.md:
    command = "PYTHON docs/examples/engines/serve_llamacpp.py {gguf} --port {port}"
"""

import argparse
import os
import signal
import sys
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx-per-slot", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()

    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = a.model
    p.hostnames = ["127.0.0.1"]
    p.port = a.port
    p.n_parallel = a.parallel
    p.n_ctx = a.ctx_per_slot * a.parallel  # the context is split across the slots
    p.cpuparams.n_threads = a.threads
    p.cpuparams_batch.n_threads = a.threads
    p.sampling.seed = a.seed
    p.warmup = False
    server = xlc.Server(p)
    print("listening", server.listening_address, flush=True)

    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())

    def watch_stdin():
        try:
            sys.stdin.read()
        finally:
            done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    del server
    os._exit(0)


if __name__ == "__main__":
    main()
