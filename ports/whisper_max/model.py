"""openai-whisper's ``AudioEncoder`` as one MAX graph per model shape (batch symbolic),
compiled once per process (and cached on disk by MAX in ``~/.cache/modular``):

* stem: conv1 (k3, pad 1) and conv2 (k3, stride 2, pad 1) as GEMMs over an im2col of three
  shifted slices (conv2's stride through an even/odd reshape), exact GELU, + positional
  embedding;
* the residual attention blocks: one subgraph (``Graph.add_subgraph``), called once per layer
  with that layer's weight prefix (``ops.call``), so compile time does not grow with depth;
  the attention core (softmax(q k^T) v) is one custom op, ``kernels/attention.mojo``, that
  never writes the score matrix (MAX 26.7 fuses attention on GPUs only);
  ``AUDIO_PORTS_MAX_KERNELS=0``, or a failed Mojo build, runs it as MAX ops instead;
* ``ln_post`` once.

Weights are graph ``Weight``s bound at ``init`` through ``weights_registry``: one compiled graph
serves any weight set of its shape. The encoder takes openai's state dict (strictly checked)
and binds the re-laid-out copy from :func:`encoder_registry`.
"""
from __future__ import annotations

import os
import subprocess
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ports.common.convert import check_keys

from .config import N_FRAMES, WhisperDims, encoder_shapes

LN_EPS = 1e-5  # torch.nn.LayerNorm default, used by whisper.model.LayerNorm

KERNELS = Path(__file__).parent / "kernels"  # Mojo custom ops, built by MAX from source
ATTENTION_HEAD_WIDTH = 64  # kernels/attention.mojo's head width (every Whisper model's)

_lock = threading.Lock()
_session = None
_compiled: dict[tuple, object] = {}
_kernel_package: Path | None = None


def _kernel_sources() -> list[Path]:
    return sorted(KERNELS.glob("*.mojo"))


def _hash_sources(h, paths) -> None:
    """Feed each file's name and bytes to the hash ``h`` (cache keys that follow the source)."""
    for src in paths:
        h.update(src.name.encode() + b"\0" + src.read_bytes())


def kernel_package() -> Path:
    """``kernels/`` precompiled (``mojo precompile``) once per kernel source and Mojo compiler
    into this host's cache, as the ``.mojoc`` the graphs load. MAX's own handling of a source
    folder runs the compiler on every graph build (1.5 s each, twice per encoder) and names
    its output by the folder's path only, so the graph's text (the artifact key) would not
    change with the kernel source; this file's name carries the source hash."""
    global _kernel_package
    with _lock:
        if _kernel_package is not None and _kernel_package.is_file():
            return _kernel_package
    import hashlib
    import tempfile
    from importlib.metadata import version

    from ports.common.hub import cache_dir

    h = hashlib.sha256(version("mojo-compiler").encode())
    _hash_sources(h, _kernel_sources())
    out = cache_dir("whisper_max") / "kernels" / f"whisper_kernels_{h.hexdigest()[:20]}.mojoc"
    if not out.is_file():
        from mojo.paths import MojoCompilationError
        from mojo.run import subprocess_run_mojo

        out.parent.mkdir(parents=True, exist_ok=True)
        # built under its final name (the compiler takes the module name from it), then
        # renamed into place: concurrent starts never read a partial file
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            staged = Path(tmp) / out.name
            args = ["precompile", str(KERNELS), "-o", str(staged)]
            try:
                subprocess_run_mojo(args, capture_output=True, check=True)
            except subprocess.CalledProcessError as err:
                raise MojoCompilationError.from_subprocess_error(KERNELS, args, err) from err
            os.replace(staged, out)
    with _lock:
        _kernel_package = out
    return out


def fused_attention_enabled(n_state: int, n_head: int) -> bool:
    """Whether the encoder's attention runs as the custom op: its head width is the kernel's,
    and ``AUDIO_PORTS_MAX_KERNELS=0`` (plain MAX ops) is not set."""
    return (n_state // n_head == ATTENTION_HEAD_WIDTH
            and os.environ.get("AUDIO_PORTS_MAX_KERNELS", "1") != "0")


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


def _w(name, shape, placeholder=False):
    DType, DeviceRef, _, _, Weight, _ = _max()
    return Weight(name, DType.float32, shape, DeviceRef.CPU(), _placeholder=placeholder)


def placeholder_layers(shapes: Mapping[str, tuple[int, ...]]):
    """``(linear, ln)`` on a subgraph's weight placeholders named as in ``shapes`` (linears
    bind ``<name>.weight_t`` (in, out) and ``<name>.bias``; LayerNorms weight and bias)."""
    _, _, _, _, _, ops = _max()

    def w(name):
        return _w(name, shapes[name], placeholder=True)

    def linear(x, name):
        return x @ w(f"{name}.weight_t") + w(f"{name}.bias")

    def ln(x, name):
        return ops.layer_norm(x, w(f"{name}.weight"), w(f"{name}.bias"), LN_EPS)

    return linear, ln


def _block(x, T: int, D: int, H: int, fused: bool):
    """One pre-LayerNorm residual attention block on (B, T, D), weights as subgraph
    placeholders (resolved per call through the ``blocks.i.`` prefix). ``fused``: the
    attention core as the custom op of ``kernels/attention.mojo``, else as MAX ops."""
    DType, DeviceRef, _, TensorType, _, ops = _max()
    dh = D // H
    linear, ln = placeholder_layers(block_registry_shapes(D))

    qkv = linear(ln(x, "attn_ln"), "attn.qkv")  # one GEMM for q, k, v: (B, T, 3D)
    # whisper scales q and k each by dh**-0.25 (same product as SDPA's 1/sqrt(dh)).
    scale = float(dh) ** -0.25
    k = ops.permute(ops.reshape(qkv[:, :, D:2 * D] * scale, (-1, T, H, dh)), [0, 2, 3, 1])
    v = ops.permute(ops.reshape(qkv[:, :, 2 * D:3 * D], (-1, T, H, dh)), [0, 2, 1, 3])
    if fused:  # kernels/attention.mojo: q read in place from qkv, no score matrix
        s = ops.constant(np.array([scale], np.float32), DType.float32, DeviceRef.CPU())
        a = ops.custom("whisper_attention", DeviceRef.CPU(), [qkv, k, v, s],
                       [TensorType(DType.float32, [qkv.shape[0], T, H, dh],
                                   device=DeviceRef.CPU())])[0].tensor
        a = ops.reshape(a, (-1, T, D))
    else:
        q = ops.permute(ops.reshape(qkv[:, :, 0:D] * scale, (-1, T, H, dh)), [0, 2, 1, 3])
        a = _matmul_k_chunked(ops.softmax(q @ k), v, T)  # (B, H, T, dh)
        a = ops.reshape(ops.permute(a, [0, 2, 1, 3]), (-1, T, D))
    x = x + linear(a, "attn.out")
    h = ops.gelu(linear(ln(x, "mlp_ln"), "mlp.0"), approximate="none")
    return x + linear(h, "mlp.2")


def encoder_graph(n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int,
                  fused: bool = True):
    """The whole encoder, batch dimension symbolic. Outputs: ln_post (the features), then
    conv1's activation, conv2+pos, and every block's output (buffers the graph materialises
    anyway; returned for stage-by-stage parity). ``fused``: attention by the custom op in
    ``kernels/`` (MAX builds it from source with its Mojo compiler), else by MAX ops."""
    DType, DeviceRef, Graph, TensorType, _, ops = _max()
    dev = DeviceRef.CPU()
    f32 = DType.float32
    T, D, C = n_ctx, n_state, n_mels
    n_in = 2 * T
    if fused and n_state // n_head != ATTENTION_HEAD_WIDTH:
        raise ValueError(f"the fused attention kernel needs a head width of "
                         f"{ATTENTION_HEAD_WIDTH}, got {n_state // n_head}")

    with Graph(f"whisper_encoder_{C}_{T}_{D}_{n_head}_{n_layer}" + ("_fused" if fused else ""),
               input_types=[TensorType(f32, ("batch", C, n_in), device=dev)],
               custom_extensions=[kernel_package()] if fused else []) as g:
        mel = g.inputs[0].tensor
        # conv1 (k3, pad 1) as one GEMM over the im2col of 3 shifted slices, K = 3 * n_mels.
        x = ops.pad(ops.permute(mel, [0, 2, 1]), [0, 0, 1, 1, 0, 0])  # (B, n_in + 2, C)
        cols = ops.concat([x[:, 0:n_in, :], x[:, 1:n_in + 1, :], x[:, 2:n_in + 2, :]], axis=2)
        h1 = ops.gelu(cols @ _w("conv1.weight_t", (3 * C, D)) + _w("conv1.bias", (D,)),
                      approximate="none")  # (B, n_in, D)
        # conv2 (k3, stride 2, pad 1): padded rows 2t, 2t+1, 2t+2 feed output t; pairs of
        # padded rows side by side (an even/odd reshape) give them as 3 plain slices.
        pairs = ops.reshape(ops.pad(h1, [0, 0, 1, 1, 0, 0]), (-1, T + 1, 2 * D))
        cols2 = ops.concat([pairs[:, 0:T, :], pairs[:, 1:T + 1, 0:D]], axis=2)  # (B, T, 3D)
        x = ops.gelu(cols2 @ _w("conv2.weight_t", (3 * D, D)) + _w("conv2.bias", (D,)),
                     approximate="none") + _w("positional_embedding", (T, D))
        outs = [h1, x]
        with g.add_subgraph("whisper_encoder_block",
                            input_types=[TensorType(f32, ("batch", T, D), device=dev)],
                            custom_extensions=[kernel_package()] if fused else []) as sub:
            sub.output(_block(sub.inputs[0].tensor, T, D, n_head, fused))
        for i in range(n_layer):
            x = ops.call(sub, x, prefix=f"blocks.{i}.")[0].tensor
            outs.append(x)
        post = ops.layer_norm(x, _w("ln_post.weight", (D,)), _w("ln_post.bias", (D,)), LN_EPS)
        g.output(post, *outs)
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
    """What one block binds: openai's block weights with the linears transposed to (in, out)
    and q/k/v fused."""
    return {"attn_ln.weight": (D,), "attn_ln.bias": (D,),
            "attn.qkv.weight_t": (D, 3 * D), "attn.qkv.bias": (3 * D,),
            "attn.out.weight_t": (D, D), "attn.out.bias": (D,),
            "mlp_ln.weight": (D,), "mlp_ln.bias": (D,),
            "mlp.0.weight_t": (D, 4 * D), "mlp.0.bias": (4 * D,),
            "mlp.2.weight_t": (4 * D, D), "mlp.2.bias": (D,)}


def block_registry(w: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """openai block weights (``blocks.i.*``) -> one block's registry. The key projection
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
    }


def encoder_registry(w: Mapping[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
    """openai ``AudioEncoder`` weights -> the encoder graph's registry: the convolutions as
    im2col GEMM weights, ``W[k * C_in + c, o] = conv.weight[o, c, k]``."""
    def conv(name):
        wt = w[f"{name}.weight"]  # (C_out, C_in, 3)
        return _f32(np.transpose(wt, (2, 1, 0)).reshape(-1, wt.shape[0]))

    reg = {"conv1.weight_t": conv("conv1"), "conv1.bias": w["conv1.bias"],
           "conv2.weight_t": conv("conv2"), "conv2.bias": w["conv2.bias"],
           "positional_embedding": w["positional_embedding"],
           "ln_post.weight": w["ln_post.weight"], "ln_post.bias": w["ln_post.bias"]}
    for i in range(n_layer):
        p = f"blocks.{i}."
        reg.update({p + k: v for k, v in block_registry(w, p).items()})
    return {k: _f32(v) for k, v in reg.items()}


def compiled(build, *shape: int):
    """Compile (once per process, per graph builder and shape) a graph: from this host's
    artifact cache when it holds one (:func:`_artifact`; the graph is then not even built),
    else by MAX, then stored there."""
    key = (build.__name__, *shape)
    with _lock:
        c = _compiled.get(key)
    if c is not None:
        return c
    path = _artifact(build, shape) if _artifact_cache_enabled() else None
    c = _load_artifact(path)
    if c is None:
        c = session().compile(build(*shape))
        _store_artifact(path, c)
    with _lock:
        return _compiled.setdefault(key, c)


# Compiled-graph artifacts (MAX ``.mef`` files). Initialising from one takes ~0.03 s, where
# MAX's own cache still spends 2-3.5 s per graph on a warm start (tiny.en: 7.6 s for the
# three graphs), most of a one-shot ``ports transcribe``. The key is what determines the
# graph: the builder and its arguments, the source of the modules that build it and of the
# Mojo kernels, the MAX version, and the CPU (an artifact holds machine code for the host
# that built it: AVX-512 here); weights are not in it (bound at ``init``). Keying on these
# rather than on the graph's text skips building the graph on a warm start, which with the
# custom op costs ~0.9 s and ~115 MB (MAX loads the kernel library to verify the op).
def _artifact(build, shape) -> Path:
    import hashlib
    import inspect
    import platform
    import sys
    from importlib.metadata import version

    from ports.common.hub import cache_dir

    cpu = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu += "".join(sorted({ln for ln in fh if ln.startswith(("model name", "flags"))}))
    except OSError:
        pass
    h = hashlib.sha256("\n".join([build.__module__, build.__qualname__, repr(tuple(shape)),
                                   version("max"), version("mojo-compiler"), cpu]).encode())
    sources = {Path(__file__), Path(inspect.getfile(sys.modules[build.__module__]))}
    _hash_sources(h, sorted(sources) + _kernel_sources())
    name = "_".join([build.__name__, *map(str, shape)])
    return cache_dir("whisper_max") / "graphs" / f"{name}-{h.hexdigest()[:20]}.mef"


def _artifact_cache_enabled() -> bool:
    return os.environ.get("AUDIO_PORTS_MAX_ARTIFACTS", "1") != "0"


def _load_artifact(path: Path | None):
    if path is None or not path.is_file():
        return None
    from max.engine import read

    try:
        return read(path)
    except Exception as err:  # noqa: BLE001 - a stale or damaged artifact is rebuilt
        warnings.warn(f"ignoring compiled graph {path} ({err}); compiling again", stacklevel=3)
        return None


def _store_artifact(path: Path | None, c) -> None:
    if path is None:
        return
    from ports.common.atomic import atomic_path

    try:
        with atomic_path(path) as tmp:
            c.export_mef(str(tmp))
    except OSError as err:  # a read-only cache only costs the next start its compile
        warnings.warn(f"could not store the compiled graph: {err}", stacklevel=3)


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
        self.dims = d = dims
        # The registry arrays must outlive the model: keep them here.
        self._registry = encoder_registry(weights, d.n_audio_layer)
        shape = (d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer)
        self.fused_attention = fused_attention_enabled(d.n_audio_state, d.n_audio_head)
        try:
            c = compiled(encoder_graph, *shape, self.fused_attention)
        except Exception as err:  # noqa: BLE001 - the Mojo build of the custom op failed
            if not self.fused_attention:
                raise
            warnings.warn(f"the encoder's fused attention kernel did not build ({err}); "
                          "running attention as MAX ops (slower, same results)", stacklevel=2)
            self.fused_attention = False
            c = compiled(encoder_graph, *shape, False)
        self._model = session().init(c, weights_registry=self._registry)

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
        out = self._model.execute(mel)[0].to_numpy()
        return out[0] if single else out

    def stages(self, mel) -> Stages:
        """Every layer's output, for stage-by-stage parity."""
        mel, _ = self._check_mel(mel)
        post, h1, *xs = (t.to_numpy().copy() for t in self._model.execute(mel))
        return Stages(np.ascontiguousarray(h1.transpose(0, 2, 1)), xs[0], xs[1:], post)


def encoder_weights_from_whisper(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``encoder.*`` entries of a full openai ``Whisper`` state dict, prefix removed."""
    return {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
