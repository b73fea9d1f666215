"""openai-whisper's ``AudioEncoder`` as MAX graphs.

Two graphs per model shape, compiled once per process (and cached on disk by MAX in
``~/.cache/modular``):

* ``stem``: conv1 (k3, pad 1) -> exact GELU -> conv2 (k3, stride 2, pad 1) -> exact GELU
  -> + positional embedding. Also returns the conv1 activation for stage-by-stage parity.
* ``block``: one pre-LayerNorm residual attention block (q/k/v as one GEMM, linears stored
  (in, out)), plus ``ln_post`` of its output as a second result. The same compiled block
  serves every layer (one ``init`` per layer with that layer's weights), so compile time does
  not grow with depth; only the last layer's ``ln_post`` output is used.

Weights are graph ``Weight``s bound at ``init`` through ``weights_registry``: one compiled graph
serves any weight set of its shape. The encoder takes openai's state dict (strictly checked);
the stem binds it as is, the block binds the re-laid-out copy from :func:`block_registry`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ports.common.convert import check_keys

from .config import N_FRAMES, WhisperDims, encoder_shapes

LN_EPS = 1e-5  # torch.nn.LayerNorm default, used by whisper.model.LayerNorm

_lock = threading.Lock()
_session = None
_compiled: dict[tuple, object] = {}


def _max():
    from max.dtype import DType
    from max.graph import DeviceRef, Graph, TensorType, Weight, ops

    return DType, DeviceRef, Graph, TensorType, Weight, ops


def session():
    """The process-wide ``InferenceSession`` (CPU). ``num_threads`` is left to the runtime:
    passing it aborts on CPU with max 26.7."""
    global _session
    with _lock:
        if _session is None:
            from max.driver import CPU
            from max.engine import InferenceSession

            _session = InferenceSession(devices=[CPU()])
        return _session


def stem_graph(n_mels: int, n_ctx: int, n_state: int):
    DType, DeviceRef, Graph, TensorType, Weight, ops = _max()
    dev = DeviceRef.CPU()
    f32 = DType.float32
    n_in = 2 * n_ctx

    def w(name, shape):
        return Weight(name, f32, shape, dev)

    def conv(x, name, c_in, stride):
        # torch (C_out, C_in, K) -> RSCF (1, K, C_in, C_out); the input is NHWC with H = 1.
        f = ops.reshape(ops.permute(w(f"{name}.weight", (n_state, c_in, 3)), [2, 1, 0]),
                        (1, 3, c_in, n_state))
        return ops.conv2d(x, f, stride=(1, stride), padding=(0, 0, 1, 1),
                          bias=w(f"{name}.bias", (n_state,)))

    with Graph(f"whisper_stem_{n_mels}_{n_ctx}_{n_state}",
               input_types=[TensorType(f32, (n_mels, n_in), device=dev)]) as g:
        mel = g.inputs[0].tensor
        x = ops.reshape(ops.transpose(mel, 0, 1), (1, 1, n_in, n_mels))
        h1 = ops.gelu(conv(x, "conv1", n_mels, 1), approximate="none")
        h2 = ops.gelu(conv(h1, "conv2", n_state, 2), approximate="none")
        x0 = ops.reshape(h2, (n_ctx, n_state)) + w("positional_embedding", (n_ctx, n_state))
        g.output(x0, ops.reshape(h1, (n_in, n_state)))
    return g


def block_graph(n_ctx: int, n_state: int, n_head: int):
    DType, DeviceRef, Graph, TensorType, Weight, ops = _max()
    dev = DeviceRef.CPU()
    f32 = DType.float32
    T, D, H = n_ctx, n_state, n_head
    dh = D // H
    shapes = block_registry_shapes(D)

    def w(name):
        return Weight(name, f32, shapes[name], dev)

    def linear(x, name):
        return x @ w(f"{name}.weight_t") + w(f"{name}.bias")

    def ln(x, name):
        return ops.layer_norm(x, w(f"{name}.weight"), w(f"{name}.bias"), LN_EPS)

    with Graph(f"whisper_block_{T}_{D}_{H}",
               input_types=[TensorType(f32, (T, D), device=dev)]) as g:
        x = g.inputs[0].tensor
        qkv = linear(ln(x, "attn_ln"), "attn.qkv")  # one GEMM for q, k, v
        # whisper scales q and k each by dh**-0.25 (same product as SDPA's 1/sqrt(dh)).
        scale = float(dh) ** -0.25
        q = ops.transpose(ops.reshape(qkv[:, 0:D] * scale, (T, H, dh)), 0, 1)
        k = ops.permute(ops.reshape(qkv[:, D:2 * D] * scale, (T, H, dh)), [1, 2, 0])
        v = ops.transpose(ops.reshape(qkv[:, 2 * D:3 * D], (T, H, dh)), 0, 1)
        a = _matmul_k_chunked(ops.softmax(q @ k), v, T)  # (H, T, dh)
        x = x + linear(ops.reshape(ops.transpose(a, 0, 1), (T, D)), "attn.out")
        h = ops.gelu(linear(ln(x, "mlp_ln"), "mlp.0"), approximate="none")
        x = x + linear(h, "mlp.2")
        g.output(x, ln(x, "ln_post"))
    return g


# Attention's probabilities @ values contracts over K = n_ctx = 1500. MAX 26.7's CPU matmul
# (batched or per-head 2-D alike) measured 2-4x less accurate there than torch's GEMM against
# float64 on real tiny.en activations (3.2e-5 vs 0.9-1.6e-5), as one long fp32 accumulation
# over K would be; the sum of products over chunks of <= 256 terms (6 x 250) measured at
# torch's level (1.8e-5 / 8.6e-6). The other attention sub-ops: LayerNorm, scaling, q @ k^T and
# softmax as accurate as torch's; the q/k/v and output GEMMs (K = 384) within 1.8x of torch's.
K_CHUNK = 256


def _matmul_k_chunked(a, b, k: int):
    """``a @ b`` over a contraction of length ``k``, as a sum of products over K chunks of at
    most ``K_CHUNK`` (equal sizes): the same value, with a shorter fp32 accumulation chain."""
    n = -(-k // K_CHUNK)
    bounds = [round(i * k / n) for i in range(n + 1)]
    out = None
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = a[..., lo:hi] @ b[..., lo:hi, :]
        out = part if out is None else out + part
    return out


def block_registry_shapes(D: int) -> dict[str, tuple[int, ...]]:
    """What the block graph binds: openai's block weights with the linears transposed to
    (in, out) and q/k/v fused, plus ``ln_post``."""
    return {"attn_ln.weight": (D,), "attn_ln.bias": (D,),
            "attn.qkv.weight_t": (D, 3 * D), "attn.qkv.bias": (3 * D,),
            "attn.out.weight_t": (D, D), "attn.out.bias": (D,),
            "mlp_ln.weight": (D,), "mlp_ln.bias": (D,),
            "mlp.0.weight_t": (D, 4 * D), "mlp.0.bias": (4 * D,),
            "mlp.2.weight_t": (4 * D, D), "mlp.2.bias": (D,),
            "ln_post.weight": (D,), "ln_post.bias": (D,)}


def block_registry(w: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """openai block weights (``blocks.i.*``) -> the block graph's registry. The key projection
    has no bias in openai's model: its slot of the fused bias is exactly zero (x + 0 == x)."""
    def t(name):
        return _f32(w[prefix + name].T)

    zeros = np.zeros_like(w[prefix + "attn.query.bias"])
    return {
        "attn_ln.weight": w[prefix + "attn_ln.weight"], "attn_ln.bias": w[prefix + "attn_ln.bias"],
        "attn.qkv.weight_t": _f32(np.concatenate([w[prefix + "attn.query.weight"],
                                                  w[prefix + "attn.key.weight"],
                                                  w[prefix + "attn.value.weight"]]).T),
        "attn.qkv.bias": _f32(np.concatenate([w[prefix + "attn.query.bias"], zeros,
                                              w[prefix + "attn.value.bias"]])),
        "attn.out.weight_t": t("attn.out.weight"), "attn.out.bias": w[prefix + "attn.out.bias"],
        "mlp_ln.weight": w[prefix + "mlp_ln.weight"], "mlp_ln.bias": w[prefix + "mlp_ln.bias"],
        "mlp.0.weight_t": t("mlp.0.weight"), "mlp.0.bias": w[prefix + "mlp.0.bias"],
        "mlp.2.weight_t": t("mlp.2.weight"), "mlp.2.bias": w[prefix + "mlp.2.bias"],
        "ln_post.weight": w["ln_post.weight"], "ln_post.bias": w["ln_post.bias"],
    }


def compiled(kind: str, *shape: int):
    """Compile (once per process, per shape) the ``stem`` or ``block`` graph."""
    key = (kind, *shape)
    with _lock:
        c = _compiled.get(key)
    if c is not None:
        return c
    build = {"stem": stem_graph, "block": block_graph}[kind]
    sess = session()
    c = sess.compile(build(*shape))
    with _lock:
        return _compiled.setdefault(key, c)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


@dataclass
class Stages:
    conv1: np.ndarray          # gelu(conv1(mel)), (B, n_state, 2*n_ctx) as torch lays it out
    conv2: np.ndarray          # gelu(conv2(.)) + positional embedding, (B, n_ctx, n_state)
    blocks: list[np.ndarray]   # each block's output, (B, n_ctx, n_state)
    ln_post: np.ndarray        # the encoder output, (B, n_ctx, n_state)


class MaxAudioEncoder:
    """The Whisper audio encoder on MAX. ``weights`` is openai's ``AudioEncoder`` state dict
    (``conv1.weight``, ``blocks.0.attn.query.weight``, ..., ``ln_post.bias``) as arrays."""

    def __init__(self, dims: WhisperDims, weights: Mapping[str, np.ndarray]):
        check_keys(weights, encoder_shapes(dims), what="Whisper encoder weights")
        self.dims = dims
        d = dims
        # The registry arrays must outlive the models: keep them here.
        self._weights = {k: _f32(v) for k, v in weights.items()}
        sess = session()
        stem_keys = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                     "positional_embedding")
        self._stem = sess.init(compiled("stem", d.n_mels, d.n_audio_ctx, d.n_audio_state),
                               weights_registry={k: self._weights[k] for k in stem_keys})
        block_c = compiled("block", d.n_audio_ctx, d.n_audio_state, d.n_audio_head)
        self._blocks = []
        # The registry arrays must outlive the models: keep them too.
        self._block_regs = [block_registry(self._weights, f"blocks.{i}.")
                            for i in range(d.n_audio_layer)]
        self._blocks = [sess.init(block_c, weights_registry=reg) for reg in self._block_regs]

    def _check_mel(self, mel) -> tuple[np.ndarray, bool]:
        mel = np.asarray(mel)
        single = mel.ndim == 2
        if single:
            mel = mel[None]
        want = (self.dims.n_mels, N_FRAMES)
        if mel.ndim != 3 or mel.shape[1:] != want:
            raise ValueError(f"mel must have shape (batch, {want[0]}, {want[1]}) or {want}, "
                             f"got {tuple(np.shape(mel))}")
        mel = _f32(mel)
        if not np.isfinite(mel).all():
            raise ValueError("mel contains NaN or infinite values")
        return mel, single

    def __call__(self, mel) -> np.ndarray:
        """(B, n_mels, 3000) or (n_mels, 3000) log-mel -> (B, n_ctx, n_state) (or unbatched)."""
        mel, single = self._check_mel(mel)
        out = np.empty((mel.shape[0], self.dims.n_audio_ctx, self.dims.n_audio_state), np.float32)
        for b in range(mel.shape[0]):
            x = self._stem.execute(mel[b])[0]
            for blk in self._blocks[:-1]:
                x = blk.execute(x)[0]
            out[b] = self._blocks[-1].execute(x)[1].to_numpy()
        return out[0] if single else out

    def stages(self, mel) -> Stages:
        """Every layer's output, for stage-by-stage parity."""
        mel, _ = self._check_mel(mel)
        c1, c2, post = [], [], None
        blocks: list[list[np.ndarray]] = [[] for _ in self._blocks]
        posts = []
        for b in range(mel.shape[0]):
            x, h1 = self._stem.execute(mel[b])
            c1.append(h1.to_numpy().T.copy())
            c2.append(x.to_numpy().copy())
            for i, blk in enumerate(self._blocks):
                x, post = blk.execute(x)
                blocks[i].append(x.to_numpy().copy())
            posts.append(post.to_numpy().copy())
        return Stages(np.stack(c1), np.stack(c2), [np.stack(b) for b in blocks], np.stack(posts))


def encoder_weights_from_whisper(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``encoder.*`` entries of a full openai ``Whisper`` state dict, prefix removed."""
    return {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
