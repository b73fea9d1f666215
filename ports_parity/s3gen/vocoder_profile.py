"""CPU ms per part of the port's HiFT vocoder (F0, source, STFT, ups, ResBlocks, ISTFT), one BLAS
thread, min of ``--repeats`` after a warm-up (each part evaluated on its own, so the sum is a
little below one whole call). Usage:

    OPENBLAS_NUM_THREADS=1 python -m ports_parity.s3gen.vocoder_profile [--seconds 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np


def profile(seconds: float = 4.0, repeats: int = 3) -> dict[str, float]:
    from ports.common.blas import import_mlx
    from ports.common.mlx_layers import leaky_relu
    from ports_parity.s3gen.parity import original_s3gen, port_s3gen_from

    mx = import_mlx()
    h = port_s3gen_from(original_s3gen(0)).mel2wav
    cfg = h.cfg
    frames = int(seconds * 50)
    mel = mx.array(np.random.default_rng(4).standard_normal((1, 80, frames)).astype(np.float32) - 5)
    ms: dict[str, float] = {}

    def part(name, fn, *args):
        y = fn(*args)
        mx.eval(y)  # warm-up: compiles
        best = math.inf
        for _ in range(repeats):
            t = time.process_time()
            y = fn(*args)
            mx.eval(y)
            best = min(best, time.process_time() - t)
        ms[name] = ms.get(name, 0.0) + best * 1e3
        return y

    f0 = part("f0", h.f0, mel)
    k1, k2 = mx.random.split(mx.random.key(0))
    n_h = cfg.nb_harmonics + 1
    phase = mx.random.uniform(-math.pi, math.pi, (1, n_h), key=k1)
    noise = mx.random.normal((1, n_h, frames * cfg.upsample_scale), key=k2)
    src = part("source", h._source, f0, phase, noise)
    s_stft = part("stft", h._stft, src[:, 0, :])
    x = part("conv_pre", h.conv_pre, mx.transpose(mel, (0, 2, 1)))
    nk = len(cfg.resblock_kernel_sizes)
    for i, up in enumerate(h.ups):
        x = part(f"stage{i}.ups", lambda x, up=up: up(leaky_relu(x, cfg.lrelu_slope)), x)
        if i == len(h.ups) - 1:
            x = mx.concatenate([x[:, 1:2], x], axis=1)
        sd = part(f"stage{i}.source_down", h.source_downs[i], s_stft)
        x = x + part(f"stage{i}.source_resblock", h.source_resblocks[i], sd)
        rs = [part(f"stage{i}.resblock k={cfg.resblock_kernel_sizes[j]}", h.resblocks[i * nk + j], x)
              for j in range(nk)]
        x = part(f"stage{i}.mean", h._mean, *rs)
    x = part("conv_post", lambda x: h.conv_post(leaky_relu(x, 0.01)), x)
    part("exp/sin/istft", h._spec_to_wav, x)
    return ms


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    ms = profile(a.seconds, a.repeats)
    total = sum(ms.values())
    for k, v in ms.items():
        print(f"{k:30s} {v:8.1f} ms {100 * v / total:5.1f}%")
    print(f"{'total':30s} {total:8.1f} ms")


if __name__ == "__main__":
    main()
