"""Benchmark cases for the S3Gen flow: MLX port vs chatterbox's own flow, same random weights.

`bench_flow_cases()` returns `ports_parity.common.bench.Case`s for `run_cases`; the integration's
`bench.py` includes them. Needs torch + chatterbox (the original) installed.
"""
from __future__ import annotations

from unittest import mock

import numpy as np

from ports.s3gen.config import SPEECH_VOCAB_SIZE

TOKEN_S = 0.04  # 25 Hz speech tokens


def build_original_flow(meanflow: bool = False, seed: int = 0):
    """chatterbox's flow exactly as `S3Token2Mel` builds it (tokenizer and CAMPPlus patched out:
    they are not part of the flow), random seeded weights, eval mode."""
    import torch
    import chatterbox.models.s3gen.s3gen as cb_s3gen

    torch.manual_seed(seed)
    stub = lambda *a, **k: torch.nn.Identity()  # noqa: E731
    with mock.patch.object(cb_s3gen, "S3Tokenizer", stub), mock.patch.object(cb_s3gen, "CAMPPlus", stub):
        t2m = cb_s3gen.S3Token2Mel(meanflow=meanflow)
    return t2m.flow.eval()


def port_from_original(flow_t, meanflow: bool = False):
    """The MLX flow loaded from the original's state dict through FLOW_RULES (strict)."""
    from ports.s3gen.flow import CausalMaskedDiffWithXvec, load_flow_state_dict

    port = CausalMaskedDiffWithXvec(meanflow=meanflow)
    load_flow_state_dict(port, {"flow." + k: v.detach().numpy() for k, v in flow_t.state_dict().items()})
    return port


def flow_inputs(n_tok: int, n_prompt: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tok = rng.integers(0, SPEECH_VOCAB_SIZE, (1, n_tok))
    ptok = rng.integers(0, SPEECH_VOCAB_SIZE, (1, n_prompt))
    pfeat = (rng.standard_normal((1, 2 * n_prompt, 80)) * 2.0 - 5.0).astype(np.float32)
    xvec = rng.standard_normal((1, 192)).astype(np.float32)
    return tok, ptok, pfeat, xvec


def bench_flow_cases(quick: bool = False, n_tok: int = 100, prompt_s: float = 3.0,
                     n_timesteps: int = 10, meanflow: bool = False):
    """Cases: flow for `n_tok` tokens, `n_timesteps` steps, without and with a `prompt_s` prompt."""
    import torch
    import mlx.core as mx

    from ports_parity.common.bench import Case

    flow_t = build_original_flow(meanflow, seed=0)
    port = port_from_original(flow_t, meanflow)
    repeats = 2 if quick else 5
    cases = []
    for n_prompt in (0, int(round(prompt_s / TOKEN_S))):
        tok, ptok, pfeat, xvec = flow_inputs(n_tok, n_prompt, seed=n_prompt)
        frames = 2 * (n_tok + n_prompt)
        torch.manual_seed(0)
        noise = torch.randn(1, 80, frames).numpy()

        def original(tok=tok, ptok=ptok, pfeat=pfeat, xvec=xvec):
            with torch.inference_mode():
                torch.manual_seed(0)
                mel, _ = flow_t.inference(
                    token=torch.from_numpy(tok), token_len=torch.tensor([tok.shape[1]]),
                    prompt_token=torch.from_numpy(ptok), prompt_token_len=torch.tensor([ptok.shape[1]]),
                    prompt_feat=torch.from_numpy(pfeat), prompt_feat_len=None,
                    embedding=torch.from_numpy(xvec), finalize=True, n_timesteps=n_timesteps,
                    meanflow=meanflow)
            return mel

        def ported(tok=tok, ptok=ptok, pfeat=pfeat, xvec=xvec, noise=noise):
            mel = port.inference(tok, None, ptok, None, pfeat, xvec, noise=noise,
                                 n_timesteps=n_timesteps, meanflow=meanflow)
            mx.eval(mel)
            return mel

        label = f"flow {n_tok} tok, {n_timesteps} steps" + (
            f", {n_prompt * TOKEN_S:g} s prompt" if n_prompt else ", no prompt")
        cases.append(Case(label, ported, original, repeats=repeats, warmup=1,
                          meta={"tokens": n_tok, "prompt_tokens": n_prompt, "frames": frames,
                                "steps": n_timesteps, "meanflow": meanflow,
                                "audio_s": n_tok * TOKEN_S}))
    return cases
