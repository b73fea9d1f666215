"""A checkpoint whose weights contradict its declared dims: the error names the dimension."""
import dataclasses

import numpy as np
import pytest

from ports.common.convert import ConversionError
from ports.whisper_max.config import WhisperDims, whisper_shapes
from ports.whisper_max.convert import check_whisper

SMALL = WhisperDims(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4,
                    n_audio_layer=2, n_vocab=51865, n_text_ctx=448, n_text_state=64,
                    n_text_head=4, n_text_layer=2)


def _weights(dims):
    return {k: np.zeros(s, np.float32) for k, s in whisper_shapes(dims).items()}


@pytest.mark.parametrize("field, value, message", [
    ("n_audio_state", 128, r"n_audio_state is 128 in the config, 64 in the weights"),
    ("n_vocab", 51864, r"n_vocab is 51864 in the config, 51865 in the weights"),
    ("n_text_layer", 3, r"n_text_layer is 3 in the config, 2 in the weights"),
    ("n_mels", 128, r"n_mels is 128 in the config, 80 in the weights"),
])
def test_wrong_dims_are_named(field, value, message):
    declared = dataclasses.replace(SMALL, **{field: value})
    with pytest.raises(ConversionError, match=message):
        check_whisper(declared, _weights(SMALL), "test checkpoint")


def test_matching_dims_pass_and_key_errors_keep_their_message():
    assert set(check_whisper(SMALL, _weights(SMALL), "ok")) == set(whisper_shapes(SMALL))
    sd = _weights(SMALL)
    del sd["decoder.ln.bias"]
    with pytest.raises(ConversionError, match=r"missing keys \(1\): decoder\.ln\.bias") as e:
        check_whisper(SMALL, sd, "test checkpoint")
    assert "in the config" not in str(e.value)
