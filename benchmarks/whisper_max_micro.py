"""Micro graphs behind the whisper_max profile notes (benchmarks/whisper_max.md), MAX vs torch:
the encoder stem as the graph builds it (im2col GEMMs + exact GELU) against torch's convolutions,
GELU and one MLP GEMM, and MAX's per-kernel cost (a chain of 50 small matmuls).

    PYTHONPATH=. python benchmarks/whisper_max_micro.py
"""
import time

import numpy as np
import torch
from max.driver import CPU
from max.dtype import DType
from max.engine import InferenceSession
from max.graph import DeviceRef, Graph, TensorType, ops

dev, f32 = DeviceRef.CPU(), DType.float32
sess = InferenceSession(devices=[CPU()])
rng = np.random.default_rng(0)
C, T, D = 80, 1500, 384
n_in = 2 * T


def best_ms(f, n=30):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts) * 1e3


def graph(name, shapes, body):
    with Graph(name, input_types=[TensorType(f32, s, device=dev) for s in shapes]) as g:
        g.output(body(*(i.tensor for i in g.inputs)))
    return sess.load(g)


def stem(mel, w1, w2):  # as ports/whisper_max/model.py encoder_graph builds it (no biases)
    x = ops.pad(ops.permute(mel, [0, 2, 1]), [0, 0, 1, 1, 0, 0])
    cols = ops.concat([x[:, 0:n_in, :], x[:, 1:n_in + 1, :], x[:, 2:n_in + 2, :]], axis=2)
    h1 = ops.gelu(cols @ w1, approximate="none")
    pairs = ops.reshape(ops.pad(h1, [0, 0, 1, 1, 0, 0]), (-1, T + 1, 2 * D))
    cols2 = ops.concat([pairs[:, 0:T, :], pairs[:, 1:T + 1, 0:D]], axis=2)
    return ops.gelu(cols2 @ w2, approximate="none")


mel = rng.standard_normal((1, C, n_in), np.float32)
w1 = rng.standard_normal((3 * C, D), np.float32) * 0.05
w2 = rng.standard_normal((3 * D, D), np.float32) * 0.05
m = graph("stem", [(1, C, n_in), (3 * C, D), (3 * D, D)], stem)
c1, c2 = torch.nn.Conv1d(C, D, 3, padding=1), torch.nn.Conv1d(D, D, 3, stride=2, padding=1)
tm = torch.from_numpy(mel)
gelu = torch.nn.functional.gelu
with torch.no_grad():
    print(f"stem: MAX {best_ms(lambda: m.execute(mel, w1, w2)):.1f} ms, "
          f"torch {best_ms(lambda: gelu(c2(gelu(c1(tm))))):.1f} ms")

x = rng.standard_normal((1, T, 4 * D), np.float32)
m = graph("gelu", [(1, T, 4 * D)], lambda a: ops.gelu(a, approximate="none"))
tx = torch.from_numpy(x)
print(f"GELU (1500 x 1536): MAX {best_ms(lambda: m.execute(x)):.2f} ms, "
      f"torch {best_ms(lambda: gelu(tx)):.2f} ms")

h = rng.standard_normal((1, T, D), np.float32)
w = rng.standard_normal((D, 4 * D), np.float32) * 0.05
m = graph("mlp0", [(1, T, D), (D, 4 * D)], lambda a, b: a @ b)
th, tw = torch.from_numpy(h), torch.from_numpy(w.T.copy())
flop = 2 * T * D * 4 * D
t_max, t_torch = best_ms(lambda: m.execute(h, w)), best_ms(lambda: torch.nn.functional.linear(th, tw))
print(f"GEMM 1500 x 384 x 1536: MAX {t_max:.2f} ms ({flop / t_max / 1e6:.0f} GFLOP/s), "
      f"torch {t_torch:.2f} ms ({flop / t_torch / 1e6:.0f} GFLOP/s)")

v = rng.standard_normal((1, D), np.float32)
wv = rng.standard_normal((D, D), np.float32) * 0.05
for n in (1, 50):
    def chain(a, b, n=n):
        for _ in range(n):
            a = a @ b
        return a
    m = graph(f"chain{n}", [(1, D), (D, D)], chain)
    print(f"{n} chained (1 x 384) @ (384 x 384) matmuls: MAX {best_ms(lambda: m.execute(v, wv)):.3f} ms")
