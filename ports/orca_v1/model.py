"""OrcaHello v1 classifier: fastai v1 ``cnn_learner(resnet50)`` with a 1-channel stem, plain torch.

Parameter names are torchvision's ResNet names (``conv1``, ``bn1``, ``layer1.0.conv1`` ...) with the
fastai head under ``fc.<i>`` exactly as upstream ``model_v1`` lays it out (``fc.1`` BatchNorm1d(4096),
``fc.3`` Linear(4096, 512), ``fc.5`` BatchNorm1d(512), ``fc.7`` Linear(512, 2)); the HF checkpoint
is the same names under ``model.``. No input normalisation: the model takes dB mels directly.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample  # torchvision v1.5: stride on the 3x3 conv

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class AdaptiveConcatPool2d(nn.Module):
    """fastai: ``cat([max_pool, avg_pool], 1)`` (max first)."""

    def __init__(self, size: int = 1):
        super().__init__()
        self.mp = nn.AdaptiveMaxPool2d(size)
        self.ap = nn.AdaptiveAvgPool2d(size)

    def forward(self, x):
        return torch.cat([self.mp(x), self.ap(x)], 1)


class OrcaResNet50(nn.Module):
    """Input (B, 1, 256, 312) dB mel; output (B, 2) logits."""

    def __init__(self, cfg: ModelConfig = ModelConfig()):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv2d(cfg.in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.inplanes = 64
        self.layer1 = self._make_layer(64, cfg.layers[0])
        self.layer2 = self._make_layer(128, cfg.layers[1], stride=2)
        self.layer3 = self._make_layer(256, cfg.layers[2], stride=2)
        self.layer4 = self._make_layer(512, cfg.layers[3], stride=2)
        feat = 512 * Bottleneck.expansion * 2
        self.avgpool = AdaptiveConcatPool2d(1)
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.BatchNorm1d(feat),
            nn.Dropout(cfg.dropout[0]),
            nn.Linear(feat, cfg.head_hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(cfg.head_hidden),
            nn.Dropout(cfg.dropout[1]),
            nn.Linear(cfg.head_hidden, cfg.num_classes),
        )
        self.eval()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.fc(self.avgpool(self.features(x)))

    @torch.inference_mode()
    def predict_proba(self, x) -> torch.Tensor:
        """softmax column of the positive class, shape (B,)."""
        return torch.softmax(self.forward(x), dim=1)[:, self.cfg.call_class_index]


def param_shapes(model: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def random_init_(model: OrcaResNet50, seed: int = 0) -> OrcaResNet50:
    """Seeded random weights *and* BatchNorm statistics (for parity tests without real weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(1000)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("bn1.weight") or ".bn" in name or name.endswith("weight") and t.dim() == 1:
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5)
            elif name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
    return model


def _fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Eval-mode BatchNorm folded into the conv before it: w' = w * g / sqrt(v + eps),
    b' = beta - mean * g / sqrt(v + eps) (float64 arithmetic, rounded once to float32)."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True)
    w = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    b = bn.bias.double() - bn.running_mean.double() * scale
    if conv.bias is not None:
        b = b + conv.bias.double() * scale
    with torch.no_grad():
        fused.weight.copy_(w.float())
        fused.bias.copy_(b.float())
    return fused


@torch.no_grad()
def fold_batchnorm(model: OrcaResNet50) -> OrcaResNet50:
    """Inference copy with every conv -> BatchNorm2d pair folded into one conv (the BatchNorm
    becomes Identity). Same parameter names for the convs; eval mode only. Scores move by
    float32 rounding only (tests: within 1e-5 of the unfolded forward)."""
    import copy

    m = copy.deepcopy(model).eval()

    def fold(parent, conv_name, bn_name):
        setattr(parent, conv_name, _fold_conv_bn(getattr(parent, conv_name),
                                                 getattr(parent, bn_name)))
        setattr(parent, bn_name, nn.Identity())

    fold(m, "conv1", "bn1")
    for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
        for blk in layer:
            for i in (1, 2, 3):
                fold(blk, f"conv{i}", f"bn{i}")
            if blk.downsample is not None:
                ds = blk.downsample
                ds[0] = _fold_conv_bn(ds[0], ds[1])
                ds[1] = nn.Identity()
    return m
