"""S3Gen flow (chatterbox ``CausalMaskedDiffWithXvec``) in MLX, and its conversion rules.

tokens + prompt tokens -> ``input_embedding`` -> token encoder (``flow_encoder``: conformer,
25 Hz -> 50 Hz) -> ``encoder_proj`` (mu) -> decoder (``flow_decoder``: conditional flow matching,
Euler ODE on the ``ConditionalDecoder`` estimator) -> mel.

Parameter paths equal chatterbox's ``flow.*`` state-dict keys minus the ``flow.`` prefix. Tensors
are channels-last inside (B, T, C); conv weights are stored MLX-style (out, k, in) (see
``flow_rules``). Batch size one, no padding (what S3Gen runs).
"""
from __future__ import annotations

import re

import numpy as np

from ports.common.blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)

from ports.common.mlx_layers import Linear  # noqa: E402

from .config import SPEECH_VOCAB_SIZE, FlowConfig, default_steps  # noqa: E402
from .flow_decoder import CausalConditionalCFM  # noqa: E402
from .flow_encoder import UpsampleConformerEncoder  # noqa: E402

# MLX keeps only 32 MB of freed CPU buffers by default: the T x T attention buffers then come back
# from the OS on every op (page faults, ~2x slower softmax at 7 s of audio)
_INFERENCE_CACHE_LIMIT = 1 << 30  # bytes


def check_tokens(tokens, name: str = "speech_tokens", *, allow_empty: bool = False,
                 vocab_size: int = SPEECH_VOCAB_SIZE) -> np.ndarray:
    """(n,) or (1, n) integer ids in [0, vocab_size - 1] -> (1, n) int64; anything else is a
    ValueError."""
    a = np.asarray(tokens)
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of token ids (or shape (1, n)), got shape "
                         f"{a.shape}")
    if a.size == 0:
        if allow_empty:
            return np.zeros((1, 0), np.int64)
        raise ValueError(f"{name}: empty token sequence")
    if a.dtype == object or a.dtype.kind not in "iuf":
        raise ValueError(f"{name}: token ids must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"{name}: token ids must be integers, got non-integral values")
    bad = (a < 0) | (a >= vocab_size)
    if bad.any():
        where = np.flatnonzero(bad)
        raise ValueError(f"{name}: {len(where)} token id(s) outside [0, {vocab_size - 1}], e.g. "
                         f"{a[where[:5]].astype(np.int64).tolist()} at positions {where[:5].tolist()} "
                         "(chatterbox's speech vocabulary; special tokens must be removed first)")
    return a.astype(np.int64)[None]


class CausalMaskedDiffWithXvec(nn.Module):
    def __init__(self, meanflow: bool = False, cfg: FlowConfig | None = None):
        super().__init__()
        cfg = cfg or FlowConfig()
        self.cfg = cfg
        self.meanflow = meanflow
        self.vocab_size = cfg.vocab_size
        self.output_size = cfg.output_size
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.input_size)
        self.spk_embed_affine_layer = Linear(cfg.spk_embed_dim, cfg.output_size)
        self.encoder = UpsampleConformerEncoder(cfg.encoder)
        self.encoder_proj = Linear(cfg.input_size, cfg.output_size)
        self.decoder = CausalConditionalCFM(cfg.decoder, meanflow=meanflow)

    # -- input checks -------------------------------------------------------------------------
    def _tokens(self, tok, name: str, allow_empty: bool) -> mx.array:
        a = check_tokens(tok, name, allow_empty=allow_empty, vocab_size=self.vocab_size)
        return mx.array(a.astype(np.int32))

    @staticmethod
    def _check_len(length, n: int, name: str):
        if length is None:
            return
        v = np.asarray(length).reshape(-1)
        if v.size != 1 or int(v[0]) != n:
            raise ValueError(f"{name}={v.tolist()} must equal the number of tokens ({n}); "
                             "this port runs batch one without padding")

    # -- stages ---------------------------------------------------------------------------------
    def speaker_projection(self, embedding):
        e = mx.array(np.asarray(embedding, dtype=np.float32)).reshape(1, -1)
        e = e.astype(self.spk_embed_affine_layer.weight.dtype)
        # F.normalize(dim=1): x / max(||x||, 1e-12)
        norm = mx.sqrt(mx.sum(e * e, axis=1, keepdims=True))
        return self.spk_embed_affine_layer(e / mx.maximum(norm, 1e-12))

    def inference(self, token, token_len=None, prompt_token=None, prompt_token_len=None,
                  prompt_feat=None, embedding=None, *, finalize: bool = True, noise=None,
                  noised_mels=None, n_timesteps: int | None = None, meanflow: bool | None = None,
                  seed: int | None = None, return_stages: bool = False, progress=None):
        """chatterbox `flow.inference` for one utterance.

        token (1, n) int; prompt_token (1, n_p) int; prompt_feat (1, 2*n_p, 80) log-mel;
        embedding (1, 192) x-vector. noise: the initial ODE state z (1, 80, 2*(n_p+n)) (chatterbox's
        `randn_like(mu)`); drawn with mx.random (optionally `seed`) when None. noised_mels replaces
        the generated part of z as chatterbox does. Returns the generated mel (1, 80, 2*n) as an
        mx.array, plus a dict of intermediates with return_stages.
        """
        prev = mx.set_cache_limit(_INFERENCE_CACHE_LIMIT)
        if prev > _INFERENCE_CACHE_LIMIT:
            mx.set_cache_limit(prev)
        try:
            return self._inference(token, token_len, prompt_token, prompt_token_len, prompt_feat,
                                   embedding, finalize=finalize, noise=noise,
                                   noised_mels=noised_mels, n_timesteps=n_timesteps,
                                   meanflow=meanflow, seed=seed, return_stages=return_stages,
                                   progress=progress)
        finally:
            mx.set_cache_limit(prev)

    def _inference(self, token, token_len, prompt_token, prompt_token_len, prompt_feat, embedding,
                   *, finalize, noise, noised_mels, n_timesteps, meanflow, seed, return_stages,
                   progress):
        meanflow = self.meanflow if meanflow is None else meanflow
        if meanflow != self.meanflow:
            raise ValueError("meanflow inference needs a flow built with meanflow=True "
                             "(time_embed_mixer weights)" if meanflow else
                             "a meanflow flow (time_embed_mixer) only runs meanflow=True, as in chatterbox")
        if n_timesteps is None:
            n_timesteps = default_steps(meanflow, self.cfg.decoder)
        if int(n_timesteps) < 1:
            raise ValueError(f"n_timesteps must be >= 1, got {n_timesteps}")
        if not finalize:
            # chatterbox 0.1.7 drops the last 3 tokens' frames from h but keeps the full-length
            # mask, and its solver then fails (mask/size mismatch): there is no result to match
            raise ValueError("finalize=False is not supported: chatterbox 0.1.7's flow fails on it "
                             "(streaming path); use finalize=True")
        if embedding is None:
            raise ValueError("embedding (speaker x-vector, shape (1, 192)) is required")
        tok = self._tokens(token, "token", allow_empty=False)
        self._check_len(token_len, tok.shape[1], "token_len")
        if prompt_token is None:
            prompt_token = np.zeros((1, 0), np.int64)
        ptok = self._tokens(prompt_token, "prompt_token", allow_empty=True)
        self._check_len(prompt_token_len, ptok.shape[1], "prompt_token_len")
        if prompt_feat is None:
            prompt_feat = np.zeros((1, 0, self.output_size), np.float32)
        pf = np.asarray(prompt_feat, dtype=np.float32)
        if pf.ndim == 2:
            pf = pf[None]
        if pf.ndim != 3 or pf.shape[0] != 1 or pf.shape[2] != self.output_size:
            raise ValueError(f"prompt_feat: expected (1, frames, {self.output_size}), got {pf.shape}")
        emb_np = np.asarray(embedding, dtype=np.float32)
        if emb_np.size != self.cfg.spk_embed_dim:
            raise ValueError(f"embedding: expected {self.cfg.spk_embed_dim} values, got shape "
                             f"{emb_np.shape}")
        if not np.all(np.isfinite(emb_np)) or not np.all(np.isfinite(pf)):
            raise ValueError("embedding/prompt_feat contain NaN or Inf")

        stages = {}
        # float16/bfloat16 weights run in that dtype (chatterbox casts the solver inputs to the
        # estimator dtype); the returned mel is float32
        dtype = self.encoder_proj.weight.dtype
        spks = self.speaker_projection(emb_np)  # (1, 80)
        all_tok = mx.concatenate([ptok, tok], axis=1)
        x = self.input_embedding(all_tok)  # mask is all ones for batch one
        h = self.encoder(x)
        mel_len1 = pf.shape[1]
        mel_len2 = h.shape[1] - mel_len1
        if mel_len2 <= 0:
            raise ValueError(f"prompt_feat has {mel_len1} frames, more than the {h.shape[1]} "
                             "frames the tokens give")
        mu = self.encoder_proj(h)  # (1, T, 80) channels-last
        cond = mx.concatenate([mx.array(pf), mx.zeros((1, mel_len2, self.output_size))], axis=1)
        cond = cond.astype(dtype)
        total = h.shape[1]

        if noise is None:
            key = mx.random.key(seed) if seed is not None else None
            z = mx.random.normal((1, self.output_size, total), key=key)
        else:
            z = np.asarray(noise, dtype=np.float32)
            if z.shape != (1, self.output_size, total):
                raise ValueError(f"noise: expected shape (1, {self.output_size}, {total}) "
                                 f"(prompt + generated frames), got {z.shape}")
            z = mx.array(z)
        if noised_mels is not None:
            nm = mx.array(np.asarray(noised_mels, dtype=np.float32))
            if nm.ndim != 3 or nm.shape[:2] != (1, self.output_size) or nm.shape[2] > total:
                raise ValueError(f"noised_mels: expected (1, {self.output_size}, <= {total}), got {nm.shape}")
            z = mx.concatenate([z[..., : total - nm.shape[-1]], nm], axis=-1)
        z = z.astype(dtype)
        if return_stages:
            mx.eval(spks, x, h, mu)
            stages.update(embedding=spks, token_embedding=x, encoder_out=h,
                          mu=mu.transpose(0, 2, 1), noise=z)

        out = self.decoder.solve_euler(z.transpose(0, 2, 1), mu, spks, cond,
                                       n_timesteps=int(n_timesteps), meanflow=meanflow,
                                       progress=progress, return_stages=return_stages)
        xt, solver_stages = out if return_stages else (out, None)
        mel = xt[:, mel_len1:].transpose(0, 2, 1).astype(mx.float32)
        if return_stages:
            stages.update(solver_stages)
            return mel, stages
        return mel


# ----------------------------------------------------------------------------------------------
# conversion rules: chatterbox `flow.*` keys -> this module's parameter paths
# ----------------------------------------------------------------------------------------------
# Conv1d weights: torch (out, in, k) -> MLX (out, k, in). Every other tensor keeps name and layout.
_CONV_WEIGHTS = (
    r"encoder\.pre_lookahead_layer\.conv[12]\.weight",
    r"encoder\.up_layer\.conv\.weight",
    r"decoder\.estimator\..*\.block\.0\.weight",       # CausalBlock1D convs
    r"decoder\.estimator\..*\.res_conv\.weight",
    r"decoder\.estimator\.(?:down|up)_blocks\.\d+\.2\.weight",  # causal down/up convs
    r"decoder\.estimator\.final_proj\.weight",
)


def flow_rules(prefix: str = "flow."):
    """Rules for source keys `prefix + <flow key>`, producing `prefix + <flow key>`."""
    from ports.common.convert import Rule, transpose

    p = re.escape(prefix)
    rules = [Rule(f"{p}(?:{pat})", fn=transpose(0, 2, 1)) for pat in _CONV_WEIGHTS]
    # everything else under the prefix is copied; the strict `expected` check of the KeyMap
    # still reports any key the port does not have
    rules.append(Rule(f"{p}(?:input_embedding|spk_embed_affine_layer|encoder|encoder_proj|decoder)\\..+"))
    return rules


FLOW_RULES = flow_rules("flow.")


def load_flow_state_dict(model: CausalMaskedDiffWithXvec, src, prefix: str = "flow.") -> None:
    """Strictly convert chatterbox flow tensors (keys `prefix + ...`, numpy) and load them."""
    from ports.common.convert import KeyMap
    from ports.common.mlx_weights import convert_into

    convert_into(model, KeyMap(flow_rules(prefix), what="s3gen flow weights"), src, prefix=prefix)
