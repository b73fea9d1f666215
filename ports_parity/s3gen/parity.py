"""S3Gen port vs the installed chatterbox 0.1.7, stage by stage (random seeded weights).

Test/parity code only: imports torch and chatterbox, which the port itself never does.
"""
from __future__ import annotations


import numpy as np

from ports_parity.common.parity import ParityReport

SR = 24000


# ---------------------------------------------------------------------------------- originals
def original_hift(seed: int = 0):
    """chatterbox's HiFTGenerator exactly as S3Token2Wav builds it, with seeded weights that
    exercise every path: weight-norm gains ~1 (not the 0.01 init), voiced and unvoiced F0, and a
    conv_post small enough that the output is not clamped everywhere."""
    import torch
    from chatterbox.models.s3gen.f0_predictor import ConvRNNF0Predictor
    from chatterbox.models.s3gen.hifigan import HiFTGenerator

    torch.manual_seed(seed)
    m = HiFTGenerator(sampling_rate=SR, upsample_rates=[8, 5, 3], upsample_kernel_sizes=[16, 11, 7],
                      source_resblock_kernel_sizes=[7, 7, 11],
                      source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                      f0_predictor=ConvRNNF0Predictor()).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("original0"):
                scale = 0.1 if name.startswith("conv_post") else 1.0
                p.copy_(scale * (0.5 + torch.rand(p.shape, generator=g)))
            elif name.endswith("original1"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("alpha"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        # F0 around 120 Hz with a spread that crosses the voiced threshold (10 Hz) now and then
        m.f0_predictor.classifier.weight.copy_(4.0 * torch.randn(m.f0_predictor.classifier.weight.shape,
                                                                  generator=g))
        m.f0_predictor.classifier.bias.fill_(120.0)
    return m


def state_dict_numpy(module, prefix: str = "") -> dict[str, np.ndarray]:
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def port_hift_from(original):
    """The MLX HiFT loaded strictly from ``original``'s state dict through ``hift_rules``."""
    from ports.s3gen.convert import load_hift

    return load_hift(state_dict_numpy(original, "mel2wav."))


def torch_sine_draws(seed: int, n_samples: int, harmonics: int = 9):
    """The random numbers SineGen draws after ``torch.manual_seed(seed)``, in its order:
    Uniform(-pi, pi) phases (B, H, 1) (fundamental zeroed) then randn noise (B, H, L)."""
    import torch
    from torch.distributions.uniform import Uniform

    torch.manual_seed(seed)
    phase = Uniform(low=-np.pi, high=np.pi).sample(sample_shape=(1, harmonics, 1))
    phase[:, 0, :] = 0
    noise = torch.randn(1, harmonics, n_samples)
    return phase[..., 0].numpy(), noise.numpy()


# ---------------------------------------------------------------------------------- HiFT
def hift_parity(n_frames: int = 40, seed: int = 0, report: ParityReport | None = None,
                prefix: str = "hift.") -> ParityReport:
    import torch

    from ports.common.blas import import_mlx

    mx = import_mlx()
    rep = report or ParityReport("s3gen")
    orig = original_hift(seed)
    port = port_hift_from(orig)
    g = torch.Generator().manual_seed(seed + 7)
    mel = torch.randn(1, 80, n_frames, generator=g) * 2 - 5  # log-mel-like
    L = n_frames * 480

    # stages of the original through forward hooks
    cap = {}

    def hook(name):
        def fn(_m, _inp, out):
            cap[name] = out.detach().clone()
        return fn

    hs = [orig.conv_pre.register_forward_hook(hook("conv_pre")),
          orig.conv_post.register_forward_hook(hook("conv_post"))]
    for i in range(3):
        hs.append(orig.source_resblocks[i].register_forward_hook(hook(f"source.{i}")))
    with torch.no_grad():
        f0_ref = orig.f0_predictor(mel)
        torch.manual_seed(seed + 11)
        wav_ref, s_ref = orig.inference(speech_feat=mel)
        sr_, si_ = orig._stft(s_ref.squeeze(1))
        stft_ref = torch.cat([sr_, si_], dim=1)
        # the source from the same draws, through the original's own modules
        up = orig.f0_upsamp(f0_ref[:, None]).transpose(1, 2)
        torch.manual_seed(seed + 11)
        src_ref, _, _ = orig.m_source(up)
        src_ref = src_ref.transpose(1, 2)
    for h in hs:
        h.remove()
    rep.check(prefix + "source_reproducible", np.array_equal(src_ref.numpy(), s_ref.numpy()),
              "original m_source under the same seed == the source inference returned")

    mel_mx = mx.array(mel.numpy())
    f0 = port.f0(mel_mx)
    rep.compare(prefix + "f0", np.array(f0), f0_ref, max_abs_rel_scale=1e-5)
    voiced = float((f0_ref > 10).float().mean())

    # source generated by the port from the original's F0 and the original's random draws
    phase, noise = torch_sine_draws(seed + 11, L)
    src = port.sine_source(mx.array(f0_ref.numpy()), phase=mx.array(phase), noise=mx.array(noise))
    rep.compare(prefix + "source(original f0, same draws)", np.array(src), src_ref,
                max_abs=1e-4, detail=f"voiced fraction {voiced:.2f}")
    # and from its own F0
    wav_gen, src_gen = port.inference(mel_mx, phase=mx.array(phase), noise=mx.array(noise))
    # the phase integrates the ~1e-6 relative F0 difference over the whole signal
    rep.compare(prefix + "source(port f0, same draws)", np.array(src_gen), src_ref, snr_db_min=60.0)
    rep.compare(prefix + "wav(port source)", np.array(wav_gen), wav_ref, snr_db_min=60.0)

    # decode with the original's source injected: stage by stage
    wav, _, st = port.inference(mel_mx, source=mx.array(s_ref.numpy()), return_stages=True)
    rep.compare(prefix + "s_stft", np.array(st["s_stft"]).transpose(0, 2, 1), stft_ref, max_abs_rel_scale=1e-5)
    rep.compare(prefix + "conv_pre", np.array(st["conv_pre"]).transpose(0, 2, 1), cap["conv_pre"],
                max_abs_rel_scale=1e-5)
    for i in range(3):
        rep.compare(prefix + f"source_resblock.{i}", np.array(st[f"source.{i}"]).transpose(0, 2, 1),
                    cap[f"source.{i}"], max_abs_rel_scale=1e-5)
    rep.compare(prefix + "conv_post", np.array(st["conv_post"]).transpose(0, 2, 1), cap["conv_post"],
                max_abs_rel_scale=1e-5)
    w = np.array(wav)
    clipped = float((np.abs(wav_ref.numpy()) >= 0.99).mean())
    rep.compare(prefix + "wav(original source injected)", w, wav_ref, snr_db_min=60.0,
                max_abs=1e-4, detail=f"clamped fraction {clipped:.3f}")
    return rep


def phase_drift(seconds: float = 10.0, seed: int = 0) -> dict:
    """Port sine source over a long, frame-wise random F0 (80..400 Hz) vs a float64 cumsum of the
    same float32 per-sample increments, on the 9th harmonic (no noise, phase 0)."""
    from ports.common.blas import import_mlx

    from ports.s3gen.hift import HiFTGenerator

    mx = import_mlx()
    m = HiFTGenerator()
    T = int(seconds * 50)
    H, L = 9, T * 480
    f0 = np.random.default_rng(seed).uniform(80, 400, (1, T)).astype(np.float32)
    # l_linear picks the 9th harmonic; tanh(0.1 sin) is compared as is
    m.m_source.l_linear.weight = mx.array(np.eye(1, H, H - 1, dtype=np.float32))
    m.m_source.l_linear.bias = mx.zeros((1,))
    s = np.array(m.sine_source(mx.array(f0), phase=mx.zeros((1, H)), noise=mx.zeros((1, H, L))))[0, 0]
    inc = (f0[0] * np.float32(H)) / np.float32(SR)  # float32, as the original computes it
    cyc = np.cumsum(np.repeat(inc.astype(np.float64), 480)) % 1
    ref = np.tanh(0.1 * np.sin(2 * np.pi * cyc))
    return {"max_abs": float(np.abs(s - ref).max()), "seconds": seconds}


# ---------------------------------------------------------------------------------- whole S3Gen
def original_s3gen(seed: int = 0, meanflow: bool = False):
    """chatterbox's S3Gen (S3Token2Wav) with its default seeded random initialisation."""
    import torch
    from chatterbox.models.s3gen import S3Gen

    torch.manual_seed(seed)
    return S3Gen(meanflow=meanflow).eval()


def port_s3gen_from(original):
    """The MLX S3Gen converted strictly from ``original``'s full state dict."""
    from ports.s3gen.config import S3GenConfig
    from ports.s3gen.convert import convert_state_dict, load_into
    from ports.s3gen.model import S3Gen

    w, mf = convert_state_dict(state_dict_numpy(original))
    port = S3Gen(S3GenConfig(meanflow=mf))
    load_into(port, w, what="S3Gen weights")
    return port


def prompt_audio_sample(seconds: float, sr: int = SR) -> np.ndarray:
    """Generated speech (espeak-ng) trimmed to ``seconds``: the reference prompt of the tests."""
    from ports.common.samples import espeak

    x = espeak("The quick brown fox jumps over the lazy dog.", sr=sr)
    return np.ascontiguousarray(x[: int(seconds * sr)]).astype(np.float32)


def flow_noise(seed: int, n_tokens: int, total_frames: int, meanflow: bool) -> np.ndarray:
    """The flow's initial state as chatterbox draws it after ``torch.manual_seed(seed)``:
    ``randn_like(mu)`` (1, 80, total); meanflow first draws ``noised_mels`` (1, 80, 2 n) and
    writes it over the generated part."""
    import torch

    torch.manual_seed(seed)
    if meanflow:
        nm = torch.randn(1, 80, 2 * n_tokens)
        z = torch.randn(1, 80, total_frames)
        z[..., total_frames - nm.shape[-1]:] = nm
    else:
        z = torch.randn(1, 80, total_frames)
    return z.numpy()


def model_parity(n_tokens: int = 50, prompt_s: float = 1.0, seed: int = 0, meanflow: bool = False,
                 report: ParityReport | None = None, original=None, port=None,
                 prefix: str | None = None) -> ParityReport:
    """End to end: embed_ref stages (prompt mel, x-vector, prompt tokens) on the same audio,
    then tokens -> mel -> waveform with the original's noise and source injected."""
    import torch

    from ports.s3gen.config import SPEECH_VOCAB_SIZE
    from ports.s3gen.hift import trim_fade

    pre = prefix if prefix is not None else ("meanflow." if meanflow else "") + \
        (f"p{prompt_s:g}s." if prompt_s else "noprompt.")
    rep = report or ParityReport("s3gen")
    orig = original if original is not None else original_s3gen(seed, meanflow)
    port = port if port is not None else port_s3gen_from(orig)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, SPEECH_VOCAB_SIZE, (1, n_tokens))

    # ---- reference prompt (24 kHz in: chatterbox resamples it to 16 kHz with torchaudio): the
    # parts on that same 16 kHz signal, then the port's whole embed_ref (its own resampler)
    if prompt_s:
        from chatterbox.models.s3gen.s3gen import get_resampler

        from ports.s3gen.mel import mel_spectrogram

        w24 = prompt_audio_sample(prompt_s, SR)
        with torch.no_grad():
            ref_t = orig.embed_ref(torch.from_numpy(w24), SR, device="cpu")
            w16 = get_resampler(SR, 16000, "cpu")(torch.from_numpy(w24)[None])[0].numpy()
        from ports.common.audio import sinc_resample as resample

        rep.compare(pre + "resample_24k_16k", resample(w24, SR, 16000), w16, max_abs=1e-5)
        rep.compare(pre + "prompt_mel", mel_spectrogram(w24).transpose(0, 2, 1), ref_t["prompt_feat"],
                    max_abs=1e-4)
        xv = np.array(port.speaker_encoder.inference(w16, 16000))
        rep.compare(pre + "x-vector(same 16k audio)", xv, ref_t["embedding"], cosine_min=0.9999,
                    max_abs_rel_scale=1e-4)
        toks, lens = port.tokenizer([w16])
        ptok = np.array(toks)[:, : int(np.array(lens)[0])][:, : ref_t["prompt_feat"].shape[1] // 2]
        rep.compare(pre + "prompt_tokens(same 16k audio)", ptok, ref_t["prompt_token"], exact=True)
        ref_port = port.embed_ref(w24, SR)  # the port's full path (its own resampler)
        rep.compare(pre + "embed_ref.prompt_feat", ref_port["prompt_feat"], ref_t["prompt_feat"], max_abs=1e-4)
        rep.compare(pre + "embed_ref.x-vector", ref_port["embedding"], ref_t["embedding"],
                    cosine_min=0.9999, max_abs_rel_scale=1e-4)
        rep.compare(pre + "embed_ref.prompt_tokens", ref_port["prompt_token"], ref_t["prompt_token"],
                    exact=True)
    else:
        ref_t = dict(prompt_token=torch.zeros(1, 0, dtype=torch.long), prompt_token_len=torch.tensor([0]),
                     prompt_feat=torch.zeros(1, 0, 80), prompt_feat_len=None,
                     embedding=torch.randn(1, 192, generator=torch.Generator().manual_seed(seed)))
    ref_np = {k: (v.numpy() if torch.is_tensor(v) else v) for k, v in ref_t.items()}

    # ---- tokens -> mel -> wav, the original recording the mel it hands to HiFT
    cap = {}
    hift_inf = orig.mel2wav.inference

    def rec(*a, **k):
        cap["mel"] = (k["speech_feat"] if "speech_feat" in k else a[0]).clone()
        return hift_inf(*a, **k)

    orig.mel2wav.inference = rec
    try:
        with torch.no_grad():
            torch.manual_seed(seed + 3)
            wav_ref, src_ref = orig.inference(torch.from_numpy(tokens), ref_dict=dict(ref_t))
    finally:
        del orig.mel2wav.inference
    total = 2 * (ref_np["prompt_token"].shape[1] + n_tokens)  # encoder frames (odd prompt mels lose one)
    z = flow_noise(seed + 3, n_tokens, total, meanflow)
    wav, src, st = port.inference(tokens, ref_np, noise=z, source=src_ref.numpy(), return_stages=True)
    mel = np.array(st["mel"])
    rep.compare(pre + "mel", mel, cap["mel"], mean_abs=1e-4, max_abs=1e-3)  # mean decides spread error
    rep.compare(pre + "wav(original source injected)", np.array(wav), wav_ref, snr_db_min=60.0)
    rep.compare(pre + "trim_fade", trim_fade(SR), orig.trim_fade, max_abs=1e-6)
    return rep
