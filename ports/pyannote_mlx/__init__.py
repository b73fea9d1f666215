"""pyannote segmentation-3.0 (PyanNet) and the segmentation step of pyannote.audio's Inference, in MLX.

    from ports.pyannote_mlx import from_pretrained, segment
    inference = from_pretrained("pyannote/segmentation-3.0")  # or a folder / checkpoint file
    seg = segment("meeting.wav", model=inference)              # or inference(wav_16k_mono)
    seg.speech_regions()

Importing this package loads no framework: MLX (after the optimized BLAS preload) loads with the
first model.
"""
from ports.common.lazy import exports

from .config import SegmentationConfig

DEFAULT_SOURCE = "pyannote/segmentation-3.0"

__all__ = ["DEFAULT_SOURCE", "PyanNet", "SegmentationConfig", "SegmentationInference",
           "Segmentation", "from_pretrained", "segment"]
__getattr__, __dir__ = exports(__name__, {
    "PyanNet": "model", "SegmentationInference": "inference", "Segmentation": "inference",
    "from_pretrained": "pipeline", "segment": "pipeline"})
