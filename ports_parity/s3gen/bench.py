"""S3Gen MLX vs chatterbox 0.1.7 (torch, CPU), same process, same inputs, random seeded weights
(timing does not depend on the values): flow (100 tokens, 10 steps, with and without a 3 s
prompt), vocoder (4 s and 10 s), end to end (prompt embedding + flow + vocoder)."""
from __future__ import annotations

import numpy as np

from ports_parity.common.bench import Case, run_cases

SR = 24000


def run(quick: bool = False):
    import torch

    from ports.common.blas import import_mlx, loaded

    from ports.s3gen.config import SPEECH_VOCAB_SIZE
    from ports_parity.s3gen.parity import original_s3gen, port_s3gen_from, prompt_audio_sample

    mx = import_mlx()
    orig = original_s3gen(0)
    port = port_s3gen_from(orig)
    n_tok = 50 if quick else 100
    prompt_s = 1.0 if quick else 3.0
    tokens = np.random.default_rng(0).integers(0, SPEECH_VOCAB_SIZE, (1, n_tok))
    tok_t = torch.from_numpy(tokens)
    w24 = prompt_audio_sample(prompt_s, SR)
    with torch.no_grad():
        ref_t = orig.embed_ref(torch.from_numpy(w24), SR, device="cpu")
    ref_np = {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in ref_t.items()}
    g = torch.Generator().manual_seed(0)
    ref0_t = dict(prompt_token=torch.zeros(1, 0, dtype=torch.long), prompt_token_len=torch.tensor([0]),
                  prompt_feat=torch.zeros(1, 0, 80), prompt_feat_len=None,
                  embedding=torch.randn(1, 192, generator=g))
    ref0_np = {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in ref0_t.items()}

    def port_flow(ref):
        return lambda: mx.eval(port.flow_inference(tokens, ref, seed=0))

    def orig_flow(ref):
        def f():
            with torch.inference_mode():
                orig.flow_inference(tok_t, ref_dict=dict(ref), finalize=True)
        return f

    reps = dict(repeats=1, warmup=0) if quick else dict(repeats=3, warmup=1)
    tok_s = n_tok / 25
    cases = [
        Case(f"flow {n_tok} tok, no prompt", port_flow(ref0_np), orig_flow(ref0_t),
             meta={"audio_s": tok_s}, **reps),
        Case(f"flow {n_tok} tok, {prompt_s:g} s prompt", port_flow(ref_np), orig_flow(ref_t),
             meta={"audio_s": tok_s}, **reps),
    ]
    for secs in ((4,) if quick else (4, 10)):
        mel = np.random.default_rng(secs).standard_normal((1, 80, secs * 50)).astype(np.float32) - 5
        mel_t = torch.from_numpy(mel)
        mel_mx = mx.array(mel)

        def pv(m=mel_mx):
            y, s = port.hift_inference(m, seed=0)
            mx.eval(y, s)

        def ov(m=mel_t):
            with torch.inference_mode():
                orig.hift_inference(m)

        cases.append(Case(f"vocoder {secs} s", pv, ov, meta={"audio_s": float(secs)}, **reps))

    def pe():
        from ports.s3gen.pipeline import vocode

        vocode(tokens, w24, SR, model=port, seed=0)

    def oe():
        with torch.inference_mode():
            orig.inference(tok_t, ref_wav=torch.from_numpy(w24)[None], ref_sr=SR)

    cases.append(Case(f"end to end {n_tok} tok + {prompt_s:g} s prompt", pe, oe,
                      meta={"audio_s": tok_s}, **reps))
    rep = run_cases("s3gen", cases)  # rows carry audio_s, so rtf / original_rtf
    rep.machine["blas"] = loaded()
    rep.machine["torch_threads"] = torch.get_num_threads()
    return rep
