"""OrcaHello v1 orca-call detector without fastai (PyTorch): bit-exact 3-stage mel frontend,
ResNet50 + fastai head, checkpoint converters and the production per-minute detection rule.

    from ports.orca_v1 import from_pretrained, detect
    detector = from_pretrained("orcasound/orcahello-srkw-detector-v1")  # or a folder / model.pkl
    result = detect("hydrophone.wav", model=detector)
    result.detections

Importing this package loads no framework: torch loads with the first model.
"""
from ports.common.lazy import exports

from .config import HF_REPO, DetectConfig, FrontendConfig, ModelConfig, OrcaConfig

DEFAULT_SOURCE = HF_REPO

__all__ = ["DEFAULT_SOURCE", "HF_REPO", "DetectConfig", "FrontendConfig", "ModelConfig",
           "OrcaConfig", "OrcaDetector", "OrcaResNet50", "FileResult", "from_pretrained", "detect"]
__getattr__, __dir__ = exports(__name__, {
    "OrcaDetector": "pipeline", "FileResult": "pipeline", "from_pretrained": "pipeline",
    "detect": "pipeline", "OrcaResNet50": "model"})
