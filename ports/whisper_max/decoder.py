"""openai-whisper's ``TextDecoder`` as MAX graphs, and the ``Inference`` that plugs it into
openai-whisper's own ``DecodingTask`` in place of ``PyTorchInference``.

Two graphs per model shape (batch, token count and cache length symbolic, so each compiles
once):

* ``cross_kv``: every layer's cross-attention keys and values from the audio features, once
  per 30-s window (openai's kv-cache hooks compute them once per window too).
* ``step``: token + positional embedding, then per layer (one subgraph, called per layer with
  its weight prefix) masked self-attention over the cached keys/values plus the new tokens,
  cross-attention, MLP; final LayerNorm and logits against the token embedding. It returns
  the logits and every layer's extended self-attention cache, fed back on the next step.

The search (greedy, beam search, best-of sampling, temperature fallback, timestamp rules,
suppression, prompts) stays openai-whisper's: :func:`decode` builds openai's ``DecodingTask``
and only swaps its inference object.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from ports.common.blas import torch_threads
from ports.common.convert import check_keys

from .config import WhisperDims, decoder_shapes
from .model import (
    LN_EPS,
    _f32,
    _max,
    _w,
    block_registry_shapes,
    compiled,
    placeholder_layers,
    session,
)


# torch's intra-op threads while openai's search runs around the MAX graphs. Its torch work there
# is small (logit filters, log-softmax over one vocabulary row, the log-mel); with more threads
# its idle OpenMP workers spin between ops on the cores MAX's runtime needs: a greedy step of
# tiny.en measured 15-22 ms at torch's 2 threads, 8-9 ms at 1, on this 2-core box.
TORCH_THREADS = 1


def layer_registry_shapes(D: int) -> dict[str, tuple[int, ...]]:
    """What one decoder layer binds: the encoder block's weights (linears transposed to
    (in, out), self q/k/v fused) plus cross-attention (cross k/v fused)."""
    return {**block_registry_shapes(D),
            "cross_attn_ln.weight": (D,), "cross_attn_ln.bias": (D,),
            "cross_attn.query.weight_t": (D, D), "cross_attn.query.bias": (D,),
            "cross_attn.kv.weight_t": (D, 2 * D), "cross_attn.kv.bias": (2 * D,),
            "cross_attn.out.weight_t": (D, D), "cross_attn.out.bias": (D,)}


def decoder_registry(w: Mapping[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
    """openai ``TextDecoder`` weights -> the decoder graphs' registry. The embeddings and
    LayerNorms are bound as given (the same arrays, not copies, when already float32); the key
    projections have no bias in openai's model, so their slots of the fused biases are zero."""
    reg = {k: _f32(w[k]) for k in ("token_embedding.weight", "positional_embedding",
                                   "ln.weight", "ln.bias")}
    for i in range(n_layer):
        p = f"blocks.{i}."

        def g(name):
            return w[p + name]

        zeros = np.zeros_like(g("attn.query.bias"))
        reg.update({
            p + "attn.qkv.weight_t": np.concatenate(
                [g("attn.query.weight"), g("attn.key.weight"), g("attn.value.weight")]).T,
            p + "attn.qkv.bias": np.concatenate(
                [g("attn.query.bias"), zeros, g("attn.value.bias")]),
            p + "cross_attn.query.weight_t": g("cross_attn.query.weight").T,
            p + "cross_attn.query.bias": g("cross_attn.query.bias"),
            p + "cross_attn.kv.weight_t": np.concatenate(
                [g("cross_attn.key.weight"), g("cross_attn.value.weight")]).T,
            p + "cross_attn.kv.bias": np.concatenate([zeros, g("cross_attn.value.bias")]),
        })
        for name in ("attn.out", "cross_attn.out", "mlp.0", "mlp.2"):
            reg[p + name + ".weight_t"] = g(name + ".weight").T
            reg[p + name + ".bias"] = g(name + ".bias")
        for name in ("attn_ln", "cross_attn_ln", "mlp_ln"):
            reg[p + name + ".weight"] = g(name + ".weight")
            reg[p + name + ".bias"] = g(name + ".bias")
    return {k: _f32(v) for k, v in reg.items()}


def cross_kv_graph(n_audio_ctx: int, D: int, H: int, n_layer: int):
    """Audio features (Ba, T, D) -> per layer: keys (Ba, H, dh, T), pre-scaled and laid out
    for ``q @ k``, and values (Ba, H, T, dh)."""
    DType, DeviceRef, Graph, TensorType, _, ops = _max()
    dev = DeviceRef.CPU()
    T, dh = n_audio_ctx, D // H
    scale = float(dh) ** -0.25
    with Graph(f"whisper_cross_kv_{T}_{D}_{H}_{n_layer}",
               input_types=[TensorType(DType.float32, ("audio_batch", T, D), device=dev)]) as g:
        xa = g.inputs[0].tensor
        outs = []
        for i in range(n_layer):
            p = f"blocks.{i}.cross_attn.kv."
            kv = xa @ _w(p + "weight_t", (D, 2 * D)) + _w(p + "bias", (2 * D,))
            k = ops.permute(ops.reshape(kv[:, :, 0:D] * scale, (-1, T, H, dh)), [0, 2, 3, 1])
            v = ops.permute(ops.reshape(kv[:, :, D:2 * D], (-1, T, H, dh)), [0, 2, 1, 3])
            outs += [k, v]
        g.output(*outs)
    return g


def _layer(x, mask, k_past, v_past, k_cross, v_cross, D: int, H: int, n_audio_ctx: int):
    """One decoder layer (a subgraph: weights are placeholders resolved through the caller's
    ``blocks.i.`` prefix). x (B, S, D); mask (S, P + S) additive; k_past / v_past
    (B, H, P, dh); k_cross (B, H, dh, T) / v_cross (B, H, T, dh)."""
    _, _, _, _, _, ops = _max()
    dh = D // H
    scale = float(dh) ** -0.25
    linear, ln = placeholder_layers(layer_registry_shapes(D))
    B, S = x.shape[0], x.shape[1]

    def heads(t):  # (B, S, D) -> (B, H, S, dh)
        return ops.permute(ops.reshape(t, (B, S, H, dh)), [0, 2, 1, 3])

    # masked self-attention over cache + new tokens
    qkv = linear(ln(x, "attn_ln"), "attn.qkv")
    q = heads(qkv[:, :, 0:D] * scale)
    # the cache grows to the mask's width (a plain symbol: subgraph signatures take no
    # expressions such as past + seq)
    total = [B, H, mask.shape[1], dh]
    k = ops.rebind(ops.concat([k_past, heads(qkv[:, :, D:2 * D] * scale)], axis=2), total)
    v = ops.rebind(ops.concat([v_past, heads(qkv[:, :, 2 * D:3 * D])], axis=2), total)
    p = ops.softmax(q @ ops.permute(k, [0, 1, 3, 2]) + mask)
    a = ops.reshape(ops.permute(p @ v, [0, 2, 1, 3]), (B, S, D))
    x = x + linear(a, "attn.out")

    # cross-attention (keys/values computed once per window, repeated per token row)
    qc = heads(linear(ln(x, "cross_attn_ln"), "cross_attn.query") * scale)
    # p @ v in one product over the 1500 keys, unlike the encoder's key chunks: with a few query
    # rows per step the step's cost is MAX's per-kernel dispatch (the 6 chunks made 17 kernels a
    # layer: 25.5 -> 16.1 ms per greedy step without them), and the step's logits still meet
    # the float64 check (test_step_logits_match_openai_and_float64).
    ac = ops.softmax(qc @ k_cross) @ v_cross
    ac = ops.reshape(ops.permute(ac, [0, 2, 1, 3]), (B, S, D))
    x = x + linear(ac, "cross_attn.out")

    h = ops.gelu(linear(ln(x, "mlp_ln"), "mlp.0"), approximate="none")
    return x + linear(h, "mlp.2"), k, v


def step_graph(n_vocab: int, n_text_ctx: int, D: int, H: int, n_layer: int, n_audio_ctx: int):
    DType, DeviceRef, Graph, TensorType, _, ops = _max()
    dev = DeviceRef.CPU()
    f32 = DType.float32
    dh = D // H

    def t(shape, dtype=f32):
        return TensorType(dtype, shape, device=dev)

    cache_t = t(("batch", H, "past", dh))
    cross_k_t = t(("batch", H, dh, n_audio_ctx))
    cross_v_t = t(("batch", H, n_audio_ctx, dh))
    inputs = [t(("batch", "seq"), DType.int64), t(("seq",), DType.int64),
              t(("seq", "total"), f32)]
    for _ in range(n_layer):
        inputs += [cache_t, cache_t, cross_k_t, cross_v_t]
    with Graph(f"whisper_decoder_step_{n_vocab}_{n_text_ctx}_{D}_{H}_{n_layer}",
               input_types=inputs) as g:
        tokens, positions, mask = (v.tensor for v in g.inputs[:3])
        caches = [v.tensor for v in g.inputs[3:]]
        emb = _w("token_embedding.weight", (n_vocab, D))
        x = ops.gather(emb, tokens, axis=0) + ops.gather(
            _w("positional_embedding", (n_text_ctx, D)), positions, axis=0)
        with g.add_subgraph("whisper_decoder_layer",
                            input_types=[x.type, mask.type, cache_t, cache_t, cross_k_t,
                                         cross_v_t]) as sub:
            sub.output(*_layer(*(v.tensor for v in sub.inputs), D, H, n_audio_ctx))
        new_cache = []
        for i in range(n_layer):
            x, k, v = (r.tensor for r in ops.call(sub, x, mask, *caches[4 * i:4 * i + 4],
                                                   prefix=f"blocks.{i}."))
            new_cache += [k, v]
        x = ops.layer_norm(x, _w("ln.weight", (D,)), _w("ln.bias", (D,)), LN_EPS)
        # logits as emb @ x^T, the embedding read row by row: for one token row (greedy) MAX
        # 26.7 runs it in 2.4 ms against 9.4 ms for x @ emb^T (the 80-MB weight transposed);
        # equal at 5 rows (beam search). Same products; the sums run over D = 384 either way.
        rows = ops.transpose(ops.reshape(x, (-1, D)), 0, 1)  # (D, B * S)
        logits = ops.reshape(ops.transpose(emb @ rows, 0, 1), (x.shape[0], x.shape[1], n_vocab))
        g.output(logits, *new_cache)
    return g


class MaxTextDecoder:
    """openai's ``TextDecoder`` on MAX. ``weights``: its state dict (``token_embedding.weight``,
    ``blocks.0.attn.query.weight``, ..., ``ln.bias``) as arrays, strictly checked."""

    def __init__(self, dims: WhisperDims, weights: Mapping[str, np.ndarray]):
        check_keys(weights, decoder_shapes(dims), what="Whisper decoder weights")
        self.dims = d = dims
        if d.n_text_state != d.n_audio_state:
            raise ValueError(f"n_text_state {d.n_text_state} != n_audio_state "
                             f"{d.n_audio_state}: cross-attention needs equal widths")
        if d.n_text_state % d.n_text_head:
            raise ValueError(f"n_text_state {d.n_text_state} is not divisible by n_text_head "
                             f"{d.n_text_head}")
        # The registry arrays must outlive the models: keep them here.
        self._registry = decoder_registry(weights, d.n_text_layer)
        cross_keys = {k for k in self._registry if ".cross_attn.kv." in k}
        D, H, L = d.n_text_state, d.n_text_head, d.n_text_layer
        sess = session()
        self._cross = sess.init(compiled(cross_kv_graph, d.n_audio_ctx, D, H, L),
                                weights_registry={k: self._registry[k] for k in cross_keys})
        self._step = sess.init(
            compiled(step_graph, d.n_vocab, d.n_text_ctx, D, H, L, d.n_audio_ctx),
            weights_registry={k: v for k, v in self._registry.items() if k not in cross_keys})

    def cross_kv(self, audio_features) -> list:
        """(Ba, n_audio_ctx, n_audio_state) features -> per layer [keys, values] (MAX tensors)."""
        x = _f32(audio_features)
        want = (self.dims.n_audio_ctx, self.dims.n_audio_state)
        if x.ndim != 3 or x.shape[1:] != want:
            raise ValueError(f"audio features must have shape (batch, {want[0]}, {want[1]}), "
                             f"got {x.shape}")
        return self._cross.execute(x)

    def step(self, tokens, cross: list, cache: list | None):
        """New tokens (B, S) after ``cache`` (None: none yet) -> logits (B, S, n_vocab) as a
        numpy array, and the extended cache (per layer keys, values: (B, H, P + S, dh))."""
        d = self.dims
        tokens = np.ascontiguousarray(np.asarray(tokens, np.int64))
        B, S = tokens.shape
        if cache is None:
            empty = np.zeros((B, d.n_text_head, 0, d.n_text_state // d.n_text_head), np.float32)
            cache = [empty] * (2 * d.n_text_layer)
        P = cache[0].shape[2]
        if P + S > d.n_text_ctx:
            raise ValueError(f"{P + S} tokens exceed the decoder's context of {d.n_text_ctx}")
        positions = np.arange(P, P + S, dtype=np.int64)
        # causal over the new tokens, bottom-right aligned after the cache (openai's mask for
        # its first call; later calls have S == 1 and no mask)
        mask = np.triu(np.full((S, P + S), -np.inf, np.float32), k=P + 1)
        args = [tokens, positions, mask]
        for i in range(d.n_text_layer):
            args += [cache[2 * i], cache[2 * i + 1], cross[2 * i], cross[2 * i + 1]]
        logits, *new_cache = self._step.execute(*args)
        return logits.to_numpy(), new_cache


class MaxInference:
    """openai-whisper's ``Inference`` interface (``logits``, ``rearrange_kv_cache``,
    ``cleanup_caching``) over :class:`MaxTextDecoder`, mirroring ``PyTorchInference``."""

    def __init__(self, decoder: MaxTextDecoder, initial_token_length: int):
        self.decoder = decoder
        self.initial_token_length = initial_token_length
        self._cross = None
        self._cache = None

    def logits(self, tokens, audio_features):
        import torch

        if self._cross is None:
            self._cross = self.decoder.cross_kv(audio_features.detach().cpu().float().numpy())
            group, rest = divmod(tokens.shape[0], audio_features.shape[0])
            if rest:
                raise ValueError(f"{tokens.shape[0]} token rows for {audio_features.shape[0]} "
                                 "audio windows")
            if group > 1:
                # beam search / best-of: openai repeats the token rows (repeat_interleave) and
                # lets each group of rows attend its window
                self._cross = [np.repeat(c.to_numpy(), group, axis=0) for c in self._cross]
        if tokens.shape[-1] > self.initial_token_length:
            # only the last token after the first forward pass (as PyTorchInference)
            tokens = tokens[:, -1:]
        logits, self._cache = self.decoder.step(tokens.cpu().numpy(), self._cross, self._cache)
        return torch.from_numpy(logits).to(audio_features.device)

    def cleanup_caching(self):
        self._cross = None
        self._cache = None

    def rearrange_kv_cache(self, source_indices):
        if self._cache is not None and source_indices != list(range(len(source_indices))):
            idx = np.asarray(source_indices, np.int64)
            self._cache = [np.ascontiguousarray(c.to_numpy()[idx]) if hasattr(c, "to_numpy")
                           else np.ascontiguousarray(c[idx]) for c in self._cache]


def decode(model, decoder: MaxTextDecoder, mel, options=None, **kwargs):
    """``whisper.decode`` with the MAX decoder: openai's ``DecodingTask`` (its search, filters
    and ranking) with ``MaxInference`` in place of its ``PyTorchInference``."""
    import torch
    from whisper.decoding import BeamSearchDecoder, DecodingOptions, DecodingTask

    options = options if options is not None else DecodingOptions()
    if single := mel.ndim == 2:
        mel = mel.unsqueeze(0)
    if kwargs:
        options = replace(options, **kwargs)
    task = DecodingTask(model, options)
    inference = MaxInference(decoder, len(task.initial_tokens))
    if isinstance(task.decoder, BeamSearchDecoder):
        assert task.decoder.inference is task.inference
        task.decoder.inference = inference
    task.inference = inference
    with torch.no_grad(), torch_threads(TORCH_THREADS):
        result = task.run(mel)
    return result[0] if single else result


def logits(decoder: MaxTextDecoder, tokens, audio_features):
    """``Whisper.logits`` (used by openai's language detection) without a cache."""
    import torch

    out, _ = decoder.step(tokens.cpu().numpy(), decoder.cross_kv(
        audio_features.detach().cpu().float().numpy()), None)
    return torch.from_numpy(out)
