"""The MLX port against the installed pyannote.audio 4.0.7, stage by stage and end to end.

The original is a real ``pyannote.audio.models.segmentation.PyanNet`` with segmentation-3.0
hyper-parameters and seeded random weights, written by Lightning's own ``save_checkpoint`` (so the
converter reads a real-format ``pytorch_model.bin`` with the pickled ``Specifications``). Stages
are computed by calling the original's own submodules; end to end, ``pyannote.audio.Inference``
is run on in-memory ``{"waveform", "sample_rate"}`` audio (torchcodec cannot load here).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ports_parity.common.parity import ParityReport

PORT = "pyannote_mlx"
SR = 16000
HPARAMS = dict(sincnet={"stride": 10},
               lstm={"hidden_size": 128, "num_layers": 4, "bidirectional": True,
                     "monolithic": True, "dropout": 0.5},
               linear={"hidden_size": 128, "num_layers": 2})
# fp32 tolerances per stage. Activations are O(1) after each instance norm; the raw sinc-conv
# output reaches O(100) (251-tap sums of the normalised wave), so it is bounded relative to its
# scale. The sinc filters differ from torch's by 1-ulp sin/cos differences at arguments up to
# ~400 rad, divided by the smallest |n_/2| (2e-4) next to the centre tap.
STAGE_TOL = {"sinc_filters": {"max_abs": 1e-5}, "wav_norm": {"max_abs": 1e-5},
             "sinc_conv": {"max_abs_rel_scale": 1e-5}}
STAGE_TOL.update({n: {"max_abs": 1e-4} for n in (
    "sincnet_block0", "sincnet_block1", "sincnet_block2", "lstm0", "lstm1", "lstm2", "lstm3",
    "linear0", "linear1", "classifier", "logprobs")})


def _env():
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")


def make_original(seed: int = 0, calibration: np.ndarray | None = None):
    """A pyannote PyanNet with segmentation-3.0 hyper-parameters and seeded random weights.

    torch's default init already randomises convs, LSTM and linears. With it alone the LSTM
    output barely depends on the input and the powerset argmax is one class everywhere, which
    would make the label checks vacuous; so the instance-norm affines and sinc band edges are
    perturbed, the LSTM input/recurrent and linear weights scaled up (x4, x2, x3), and, given
    ``calibration`` audio (B, 1, N), the classifier bias centred on its per-class mean logit.
    """
    _env()
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(seed)
    model = PyanNet(**HPARAMS)
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME, duration=10.0,
        warm_up=(0.0, 0.0), classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2, permutation_invariant=True)
    model.build()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm1d" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "norm1d" in name and name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(("low_hz_", "band_hz_")):
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.startswith("lstm.weight_ih"):
                p.mul_(4.0)
            elif name.startswith("lstm.weight_hh"):
                p.mul_(2.0)
            elif name.startswith("linear") and name.endswith("weight"):
                p.mul_(3.0)
        model.eval()
        if calibration is not None:
            import torch.nn.functional as F

            x = torch.from_numpy(np.ascontiguousarray(calibration, np.float32))
            h, _ = model.lstm(model.sincnet(x).transpose(1, 2))
            for lin in model.linear:
                h = F.leaky_relu(lin(h))
            model.classifier.bias.sub_(model.classifier(h).mean(dim=(0, 1)))
    return model


def save_original(model, path: str | Path) -> Path:
    """Write ``model`` as pyannote does: a Lightning checkpoint with a ``pyannote.audio`` entry."""
    import lightning

    path = Path(path)
    trainer = lightning.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, accelerator="cpu", max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(str(path))
    return path


def original_stages(model, wav: np.ndarray) -> dict[str, np.ndarray]:
    """Every stage computed with the original's own submodules; channels-last like the port."""
    import torch
    import torch.nn.functional as F

    out = {}
    sn = model.sincnet
    with torch.inference_mode():
        out["sinc_filters"] = sn.conv1d[0].filterbank.filters().numpy().copy()
        x = torch.from_numpy(np.ascontiguousarray(wav, np.float32))
        x = sn.wav_norm1d(x)
        out["wav_norm"] = x.numpy().copy()
        for c, (conv, pool, norm) in enumerate(zip(sn.conv1d, sn.pool1d, sn.norm1d)):
            x = conv(x)
            if c == 0:
                out["sinc_conv"] = x.transpose(1, 2).numpy().copy()
                x = torch.abs(x)
            x = F.leaky_relu(norm(pool(x)))
            out[f"sincnet_block{c}"] = x.transpose(1, 2).numpy().copy()
        h = x.transpose(1, 2)
        # each layer of the monolithic LSTM through a one-layer torch LSTM holding its weights
        lstm = model.lstm
        for k in range(lstm.num_layers):
            one = torch.nn.LSTM(lstm.input_size if k == 0 else 2 * lstm.hidden_size,
                                lstm.hidden_size, num_layers=1, bidirectional=True,
                                batch_first=True)
            sd = {n.replace(f"_l{k}", "_l0"): p for n, p in lstm.state_dict().items()
                  if f"_l{k}" in n and (n.endswith(f"_l{k}") or n.endswith(f"_l{k}_reverse"))}
            one.load_state_dict(sd, strict=True)
            h, _ = one(h)
            out[f"lstm{k}"] = h.numpy().copy()
        full, _ = lstm(x.transpose(1, 2))
        out["lstm_monolithic"] = full.numpy().copy()
        for k, lin in enumerate(model.linear):
            h = F.leaky_relu(lin(h))
            out[f"linear{k}"] = h.numpy().copy()
        h = model.classifier(h)
        out["classifier"] = h.numpy().copy()
        out["logprobs"] = model.activation(h).numpy().copy()
        out["forward"] = model(torch.from_numpy(np.ascontiguousarray(wav, np.float32))).numpy()
    return out


def port_stages(model, wav: np.ndarray) -> dict[str, np.ndarray]:
    from ports.common.blas import import_mlx

    mx = import_mlx()
    out = {"sinc_filters": np.array(model.sincnet.conv1d[0].weight).transpose(0, 2, 1)}
    for name, x in model.stages(mx.array(np.ascontiguousarray(wav, np.float32))):
        mx.eval(x)
        out[name] = np.array(x)
    return out


def min_margin(logprobs: np.ndarray) -> float:
    """Smallest gap between the best and second-best powerset class (argmax robustness)."""
    s = np.sort(logprobs, axis=-1)
    return float((s[..., -1] - s[..., -2]).min())


def compare_stages(report: ParityReport, port_model, orig_model, wav: np.ndarray,
                   tag: str = "") -> None:
    ref = original_stages(orig_model, wav)
    got = port_stages(port_model, wav)
    last = f"lstm{orig_model.lstm.num_layers - 1}"
    report.compare(f"{tag}lstm chained == monolithic (original)", ref[last],
                   ref["lstm_monolithic"], max_abs=1e-6)
    report.compare(f"{tag}original stages == forward", ref["logprobs"], ref["forward"], max_abs=1e-6)
    for name, tol in STAGE_TOL.items():
        report.compare(f"{tag}{name}", got[name], ref[name], **tol)
    lp, lr = got["logprobs"], ref["logprobs"]
    report.check(f"{tag}hard labels (argmax) identical", np.array_equal(lp.argmax(-1), lr.argmax(-1)),
                 frames=int(lr.shape[0] * lr.shape[1]),
                 classes_seen=int(len(np.unique(lr.argmax(-1)))),
                 min_margin_original=min_margin(lr))


class memo_forward:
    """Context manager: the original's ``forward`` memoised on its input bytes, so that running
    ``Inference`` twice (segmentation, then the VAD hook) computes each chunk batch once. Every
    pyannote code path still runs; only repeated identical forwards are reused."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        import hashlib

        fwd = self.model.forward
        cache = self.cache = {}  # insertion order = order of the forwards
        inputs = self.inputs = {}  # the same keys: the chunk batches pyannote fed the model

        def forward(x, *a, **k):
            xn = x.detach().cpu().numpy()
            key = (tuple(x.shape), hashlib.sha1(xn.tobytes()).hexdigest())
            if key not in cache:
                cache[key] = fwd(x, *a, **k)
                inputs[key] = xn.copy()
            return cache[key]

        self.model.forward = forward
        return self.model

    def __exit__(self, *exc):
        del self.model.forward  # back to the class method


def original_inference(orig_model, wav: np.ndarray, vad: bool = False, batch_size: int = 32):
    """``pyannote.audio.Inference`` as the pipelines build it (segmentation, or VAD hook)."""
    import torch
    from pyannote.audio import Inference

    kw = {}
    if vad:  # VoiceActivityDetection's hook
        kw["pre_aggregation_hook"] = lambda scores: np.max(scores, axis=-1, keepdims=True)
    inf = Inference(orig_model, batch_size=batch_size, **kw)
    return inf({"waveform": torch.from_numpy(np.asarray(wav, np.float32)[None]),
                "sample_rate": SR})


def original_speaker_count(orig_model, seg):
    from pyannote.audio.pipelines.speaker_diarization import SpeakerDiarization

    return SpeakerDiarization.speaker_count(seg, orig_model.receptive_field, warm_up=(0.0, 0.0))


def original_speech(orig_model, vad_scores) -> list[tuple[float, float]]:
    from pyannote.audio.utils.signal import Binarize

    ann = Binarize(onset=0.5, offset=0.5)(vad_scores)
    return [(s.start, s.end) for s, _ in ann.itertracks()]


def float64_logprobs(orig_model, chunks: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The original model run in float64 (a ``.double()`` copy) on (C, 1, N) chunks."""
    import copy

    import torch

    m = copy.deepcopy(orig_model).double().eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(chunks), batch_size):
            out.append(m(torch.from_numpy(np.asarray(chunks[i:i + batch_size], np.float64))).numpy())
    return np.concatenate(out)


# Real weights make some chunks ill-conditioned (near-tied LSTM gates, log-probs of -30): there the
# original's own fp32 run strays from float64 by up to 1e-2, so the port is judged against the
# original in float64, relative to the original fp32's own error on the same chunk.
F64_PER_CHUNK = 2.0   # port error <= max(2x original fp32 error, F64_FLOOR) on every chunk
F64_FLOOR = 1e-4
F64_MEAN = 1.25       # and <= 1.25x on average over the chunks


def judge_vs_float64(report: ParityReport, port_lp: np.ndarray, orig_lp: np.ndarray,
                     ref64: np.ndarray, tag: str = "") -> dict:
    """Per-chunk max-abs log-prob errors of the port and of the original fp32 against the
    original in float64; two rows: every chunk within bound, and the mean ratio."""
    c = ref64.shape[0]
    e_port = np.abs(port_lp.astype(np.float64) - ref64).reshape(c, -1).max(1)
    e_orig = np.abs(orig_lp.astype(np.float64) - ref64).reshape(c, -1).max(1)
    bound = np.maximum(F64_PER_CHUNK * e_orig, F64_FLOOR)
    worst = int(np.argmax(e_port / bound))
    stats = {"chunks": c, "port_max": float(e_port.max()), "orig_max": float(e_orig.max()),
             "port_mean": float(e_port.mean()), "orig_mean": float(e_orig.mean()),
             "worst_chunk": worst, "worst_port": float(e_port[worst]),
             "worst_orig": float(e_orig[worst]),
             "chunks_orig_over_1e-4": int((e_orig > 1e-4).sum())}
    report.check(f"{tag}log-probs per chunk vs original float64", bool((e_port <= bound).all()),
                 f"port <= max({F64_PER_CHUNK:g}x original fp32 error, {F64_FLOOR:g}); worst chunk "
                 f"{worst}: port {e_port[worst]:.2e}, original fp32 {e_orig[worst]:.2e}", **stats)
    ratio = stats["port_mean"] / stats["orig_mean"]
    report.check(f"{tag}log-probs mean error vs float64", ratio <= F64_MEAN,
                 f"port {stats['port_mean']:.2e} / original fp32 {stats['orig_mean']:.2e} = "
                 f"{ratio:.2f} (<= {F64_MEAN:g})", ratio=ratio)
    return stats


def compare_inference(report: ParityReport, port_inf, orig_model, wav: np.ndarray,
                      tag: str = "", float64: bool = False) -> None:
    """End to end against ``pyannote.audio.Inference``. Log-probs: within 1e-4 of the original's
    fp32 run, or with ``float64`` (real weights) judged per chunk against its float64 run."""
    memo = memo_forward(orig_model)
    with memo:
        seg_ref = original_inference(orig_model, wav, batch_size=port_inf.batch_size)
        vad_ref = original_inference(orig_model, wav, vad=True, batch_size=port_inf.batch_size)
    count_ref = original_speaker_count(orig_model, seg_ref)
    seg = port_inf(wav, keep_logprobs=True)
    # the original's log-probs of every chunk, as Inference computed them (batches in order)
    lp_ref = np.concatenate([v.detach().numpy() for v in memo.cache.values()])
    if float64:
        ref64 = float64_logprobs(orig_model, np.concatenate(list(memo.inputs.values())))
        report.info.setdefault("float64", {})[tag or "main"] = judge_vs_float64(
            report, seg.logprobs, lp_ref, ref64, tag)
    else:
        report.compare(f"{tag}Inference log-probs (all chunks)", seg.logprobs, lp_ref,
                       max_abs=1e-4, detail=f"min top-2 margin {min_margin(lp_ref):.2e}")
    report.compare(f"{tag}Inference chunks (C,589,3)", seg.multilabel, seg_ref.data, exact=True)
    ch = seg_ref.sliding_window
    report.check(f"{tag}chunk window", (ch.start, ch.duration, ch.step) ==
                 (seg.chunks.start, seg.chunks.duration, seg.chunks.step),
                 original=(ch.start, ch.duration, ch.step))
    vad, vad_frames = seg.vad()
    report.compare(f"{tag}VAD aggregation", vad, vad_ref.data, exact=True)
    fr = vad_ref.sliding_window
    report.check(f"{tag}VAD frames", (fr.start, fr.duration, fr.step) ==
                 (vad_frames.start, vad_frames.duration, vad_frames.step),
                 original=(fr.start, fr.duration, fr.step))
    count, _ = seg.speaker_count()
    report.compare(f"{tag}speaker count", count, count_ref.data, exact=True)
    report.check(f"{tag}speaker count dtype", count.dtype == count_ref.data.dtype,
                 dtype=str(count_ref.data.dtype))
    sp_ref = original_speech(orig_model, vad_ref)
    sp = seg.speech_regions()
    report.check(f"{tag}speech regions (Binarize)", sp == sp_ref, regions=len(sp_ref))
    report.info.setdefault("inference", {})[tag or "main"] = {
        "seconds": len(wav) / SR, "chunks": int(seg.multilabel.shape[0]),
        "has_last_chunk": seg.has_last_chunk, "speech_regions": len(sp_ref),
        "max_count": int(count_ref.data.max()), "speech_fraction": float(vad_ref.data.mean())}


def conversation_audio(seconds: float = 64.3, seed: int = 0) -> np.ndarray:
    """Two espeak-ng voices alternating/overlapping with noise and silences; 64.3 s needs the
    padded last chunk ((64.3 - 10) % 1 != 0)."""
    from ports.common.samples import conversation

    wav, _ = conversation(seconds, sr=SR, seed=seed)
    return wav.astype(np.float32)


@dataclass
class Fixture:
    """Original model, its real-format checkpoint, the port loaded from it, and test audio."""
    orig: object
    checkpoint: Path
    model: object
    wav: np.ndarray  # the long conversation
    chunks: np.ndarray  # (3, 1, 160000): two speech chunks and one of white noise
    workdir: Path


_FIXTURES: dict = {}


def fixture(seconds: float = 64.3, seed: int = 0, workdir: str | Path | None = None) -> Fixture:
    """Built once per process (tests and ``run`` share it)."""
    key = (seconds, seed, str(workdir))
    if key in _FIXTURES:
        return _FIXTURES[key]
    import atexit
    import shutil
    import tempfile

    from ports.pyannote_mlx.pipeline import load_model

    if workdir is None:
        wd = Path(tempfile.mkdtemp(prefix="pyannote_mlx-"))
        atexit.register(shutil.rmtree, wd, ignore_errors=True)
    else:
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
    wav = conversation_audio(seconds, seed)
    rng = np.random.default_rng(seed + 1)
    n = round(10.0 * SR)
    chunks = np.stack([wav[:n], wav[n:2 * n] if wav.size >= 2 * n else wav[-n:],
                       (0.1 * rng.standard_normal(n)).astype(np.float32)])[:, None]
    orig = make_original(seed=seed, calibration=chunks[:2])
    ckpt = save_original(orig, wd / "pytorch_model.bin")
    fx = Fixture(orig, ckpt, load_model(ckpt), wav, chunks, wd)
    _FIXTURES[key] = fx
    return fx


def edge_lengths(wav: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs for the other chunking branches: shorter than one window (only the padded chunk),
    an exact fit (no padded chunk), and silence followed by speech."""
    return {"short 3.7s": wav[: round(3.7 * SR)],
            "exact 12s": wav[round(20 * SR): round(32 * SR)],
            "silence+speech 11.5s": np.concatenate([np.zeros(round(6 * SR), np.float32),
                                                    wav[round(2 * SR): round(7.5 * SR)]])}


def run(quick: bool = False, workdir: str | Path | None = None) -> ParityReport:
    from ports.pyannote_mlx.inference import SegmentationInference

    fx = fixture(21.5 if quick else 64.3, workdir=workdir)
    report = ParityReport(PORT, checkpoint=str(fx.checkpoint))
    compare_stages(report, fx.model, fx.orig, fx.chunks)
    inf = SegmentationInference(fx.model)
    compare_inference(report, inf, fx.orig, fx.wav)
    if not quick:
        for name, w in edge_lengths(fx.wav).items():
            compare_inference(report, inf, fx.orig, w, tag=f"[{name}] ")
    return report
