"""S3Gen (chatterbox ``S3Token2Wav``): tokenizer, speaker encoder, flow and HiFT in one MLX module
whose parameter paths equal chatterbox's state-dict keys (after the conversion rules).
"""
from __future__ import annotations

import warnings

import numpy as np

from ports.common.audio import sinc_resample
from ports.common.blas import import_mlx

mx = import_mlx()
import mlx.nn as nn  # noqa: E402  (after the BLAS preload)

from .campplus import CAMPPlus  # noqa: E402
from .config import MAX_PROMPT_S, S3_SR, S3GEN_SR, S3GenConfig  # noqa: E402
from .flow import CausalMaskedDiffWithXvec, check_tokens  # noqa: E402
from .hift import HiFTGenerator, apply_trim_fade  # noqa: E402
from .mel import mel_spectrogram  # noqa: E402
from .prompt import prompt_audio  # noqa: E402
from .tokenizer import S3TokenizerV2  # noqa: E402


class S3Gen(nn.Module):
    def __init__(self, config: S3GenConfig | None = None):
        super().__init__()
        self.config = config or S3GenConfig()
        self.tokenizer = S3TokenizerV2()
        self.speaker_encoder = CAMPPlus()
        self.flow = CausalMaskedDiffWithXvec(meanflow=self.config.meanflow)
        self.mel2wav = HiFTGenerator()

    @property
    def meanflow(self) -> bool:
        return self.config.meanflow

    # ------------------------------------------------------------------ reference prompt
    def embed_ref(self, wav, sr: int) -> dict:
        """chatterbox ``embed_ref``: prompt tokens (16 kHz tokenizer), prompt mel (24 kHz) and
        x-vector (16 kHz CAMPPlus). ``wav`` is mono (N,) or (C, N) float at ``sr``; it is resampled
        from ``sr`` to each of 24 kHz and 16 kHz with torchaudio's sinc resampler, as chatterbox
        does."""
        if not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise ValueError(f"prompt sample rate must be a positive integer, got {sr!r}")
        x = prompt_audio(wav, int(sr), int(sr))  # mono, finite, at least one mel window
        if x.shape[0] > MAX_PROMPT_S * sr:
            warnings.warn(f"S3Gen received a prompt longer than {MAX_PROMPT_S:g} s "
                          "(chatterbox's TTS/VC trim it to 10 s)", stacklevel=2)
        w24 = sinc_resample(x, int(sr), S3GEN_SR)
        w16 = sinc_resample(x, int(sr), S3_SR)
        feat = mel_spectrogram(w24).transpose(0, 2, 1)  # (1, T, 80)
        emb = np.array(self.speaker_encoder.inference(w16, S3_SR), dtype=np.float32)
        toks, lens = self.tokenizer([w16])
        toks = np.array(toks)[:, : int(np.array(lens)[0])].astype(np.int64)
        if feat.shape[1] != 2 * toks.shape[1]:
            # chatterbox: "Reference mel length is not equal to 2 * reference token length"
            toks = toks[:, : feat.shape[1] // 2]
        return dict(prompt_token=toks, prompt_token_len=np.array([toks.shape[1]]),
                    prompt_feat=feat, prompt_feat_len=None, embedding=emb.reshape(1, -1))

    # ------------------------------------------------------------------ tokens -> mel -> wav
    def flow_inference(self, speech_tokens, ref_dict: dict, *, noise=None, seed: int | None = None,
                       n_timesteps: int | None = None, return_stages: bool = False, progress=None):
        """Generated mel (1, 80, 2 n) for ``speech_tokens`` in the voice of ``ref_dict``.

        noise: the flow's initial state z (1, 80, prompt + generated frames), chatterbox's
        ``randn_like(mu)`` (for meanflow, with its ``noised_mels`` already written into the
        generated part)."""
        tok = check_tokens(speech_tokens)
        if ref_dict is None:
            raise ValueError("ref_dict is required (S3Gen.embed_ref(wav, sr))")
        missing = [k for k in ("prompt_token", "prompt_feat", "embedding") if k not in ref_dict]
        if missing:
            raise ValueError(f"ref_dict lacks {', '.join(missing)}")
        ptok = check_tokens(ref_dict["prompt_token"], "prompt_token", allow_empty=True)
        return self.flow.inference(
            tok, np.array([tok.shape[1]]), ptok, np.array([ptok.shape[1]]),
            ref_dict["prompt_feat"], ref_dict["embedding"], finalize=True, noise=noise, seed=seed,
            n_timesteps=n_timesteps or self.config.steps, meanflow=self.meanflow,
            return_stages=return_stages, progress=progress)

    def hift_inference(self, mel, *, source=None, seed: int | None = None, return_stages: bool = False):
        key = mx.random.key(seed) if seed is not None else None
        src = None if source is None else mx.array(np.asarray(source, dtype=np.float32))
        return self.mel2wav.inference(mx.array(mel) if not isinstance(mel, mx.array) else mel,
                                      source=src, key=key, return_stages=return_stages)

    def inference(self, speech_tokens, ref_dict: dict, *, noise=None, source=None,
                  seed: int | None = None, n_timesteps: int | None = None,
                  return_stages: bool = False, progress=None):
        """chatterbox ``S3Token2Wav.inference``: -> (waveform (1, N) at 24 kHz, source (1, 1, N)),
        with the first 20 ms zeroed and the next 20 ms faded in. ``noise`` / ``source`` inject the
        flow's initial state and the vocoder's excitation; ``seed`` seeds both otherwise."""
        fseed = None if seed is None else int(seed)
        hseed = None if seed is None else int(seed) + 1
        out = self.flow_inference(speech_tokens, ref_dict, noise=noise, seed=fseed,
                                  n_timesteps=n_timesteps, return_stages=return_stages,
                                  progress=progress)
        mel, fstages = out if return_stages else (out, None)
        res = self.hift_inference(mel, source=source, seed=hseed, return_stages=return_stages)
        wav, src = res[0], res[1]
        wav = apply_trim_fade(wav, S3GEN_SR)
        if return_stages:
            stages = dict(fstages)
            stages.update({f"hift.{k}": v for k, v in res[2].items()})
            stages["mel"] = mel
            return wav, src, stages
        return wav, src
