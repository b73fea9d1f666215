"""OrcaHello v1 orca-call detector without fastai (PyTorch): bit-exact 3-stage mel frontend,
ResNet50 + fastai head, checkpoint converters and the production per-minute detection rule."""
from .config import HF_REPO, DetectConfig, FrontendConfig, ModelConfig, OrcaConfig

__all__ = ["HF_REPO", "DetectConfig", "FrontendConfig", "ModelConfig", "OrcaConfig"]
