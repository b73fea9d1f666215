"""The attention core of one whisper encoder layer (6 heads, 1500 keys) as a MAX graph: as MAX ops
the way the encoder's fallback computes it (p @ v summed over key chunks), with the queries
split into N blocks, or (``kernel``) the encoder's custom op (kernels/attention.mojo):

    PYTHONPATH=. python benchmarks/whisper_max_attention.py N_QUERY_BLOCKS|kernel

torch's fused ``scaled_dot_product_attention`` on the same shapes, for comparison::

    import time, torch, numpy as np
    B, H, T, dh = 1, 6, 1500, 64
    rng = np.random.default_rng(0)
    q = torch.from_numpy(rng.standard_normal((B, H, T, dh), np.float32) * 0.35)
    k = torch.from_numpy(rng.standard_normal((B, H, dh, T), np.float32) * 0.35).transpose(2, 3).contiguous()
    v = torch.from_numpy(rng.standard_normal((B, H, T, dh), np.float32))
    ts=[]
    for _ in range(20):
        t=time.perf_counter(); torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0); ts.append(time.perf_counter()-t)
    print(f"torch sdpa min {min(ts)*1e3:.1f} ms")
"""
import time, sys, numpy as np
from max.driver import CPU
from max.dtype import DType
from max.engine import InferenceSession
from max.graph import DeviceRef, Graph, TensorType, ops
from ports.whisper_max.model import _matmul_k_chunked
dev = DeviceRef.CPU(); s = InferenceSession(devices=[CPU()])
B, H, T, dh = 1, 6, 1500, 64
rng = np.random.default_rng(0)
q = rng.standard_normal((B, H, T, dh), np.float32) * 0.35
k = rng.standard_normal((B, H, dh, T), np.float32) * 0.35
v = rng.standard_normal((B, H, T, dh), np.float32)
f32 = DType.float32
if sys.argv[1] == "kernel":
    from ports.whisper_max.model import kernel_package
    nq = "kernel"
    # the op reads q from the fused projection (B, T, 3D): q in its first D columns
    qkv = np.concatenate([q.transpose(0, 2, 1, 3).reshape(B, T, H * dh),
                          np.zeros((B, T, 2 * H * dh), np.float32)], axis=2)
    types = [TensorType(f32, ("b", T, 3 * H * dh), device=dev),
             TensorType(f32, ("b", H, dh, T), device=dev),
             TensorType(f32, ("b", H, T, dh), device=dev), TensorType(f32, (1,), device=dev)]
    with Graph("att_kernel", input_types=types, custom_extensions=[kernel_package()]) as g:
        QKV, K, V, S = (i.tensor for i in g.inputs)
        o = ops.custom("whisper_attention", dev, [QKV, K, V, S],
                       [TensorType(f32, [QKV.shape[0], T, H, dh], device=dev)])[0].tensor
        g.output(ops.permute(o, [0, 2, 1, 3]))
    args = (qkv, k, v, np.ones(1, np.float32))
else:
    nq = int(sys.argv[1])
    with Graph(f"att_q{nq}", input_types=[TensorType(f32, ("b", H, T, dh), device=dev), TensorType(f32, ("b", H, dh, T), device=dev), TensorType(f32, ("b", H, T, dh), device=dev)]) as g:
        Q, K, V = (i.tensor for i in g.inputs)
        bounds = [round(i * T / nq) for i in range(nq + 1)]
        outs = [_matmul_k_chunked(ops.softmax(Q[:, :, lo:hi, :] @ K), V, T) for lo, hi in zip(bounds[:-1], bounds[1:])]
        g.output(outs[0] if nq == 1 else ops.concat(outs, axis=2))
    args = (q, k, v)
t = time.perf_counter(); m = s.load(g); print("nq", nq, "compile", round(time.perf_counter() - t, 1), flush=True)
out = m.execute(*args)[0].to_numpy()
sc = np.einsum("bhtd,bhds->bhts", q.astype(np.float64), k.astype(np.float64)); sc -= sc.max(-1, keepdims=True); p = np.exp(sc); p /= p.sum(-1, keepdims=True)
ref = p @ v.astype(np.float64)
ts = []
for _ in range(20):
    t = time.perf_counter(); m.execute(*args); ts.append(time.perf_counter() - t)
import resource
print("nq", nq, f"min {min(ts)*1e3:.1f} ms  err {np.abs(out-ref).max():.2e}  maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss//1024} MB", flush=True)
