"""S3Gen configuration: the architecture of chatterbox 0.1.7's ``S3Token2Wav``, one dataclass per
part (the defaults are chatterbox's values; its checkpoints only load with them), and the run-time
choices (``S3GenConfig``: meanflow variant, ODE steps, dtype)."""
from __future__ import annotations

from dataclasses import dataclass, field

S3GEN_SR = 24000          # output and prompt-mel rate
S3_SR = 16000             # tokenizer and x-vector rate
SPEECH_VOCAB_SIZE = 6561  # valid speech-token ids: [0, 6560]
MAX_PROMPT_S = 10.0       # chatterbox warns above this (VC/TTS trim the prompt to 10 s)

# files a chatterbox repo/folder may hold; the first present is used
WEIGHT_FILES = ("s3gen.safetensors", "s3gen_meanflow.safetensors", "s3gen.pt")
DTYPES = ("float32", "float16", "bfloat16")


# ---------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class PromptMelConfig:
    """chatterbox ``models/s3gen/utils/mel.py`` ``mel_spectrogram`` as ``embed_ref`` calls it."""
    sampling_rate: int = S3GEN_SR
    n_fft: int = 1920
    hop_size: int = 480
    win_size: int = 1920
    num_mels: int = 80
    fmin: float = 0.0
    fmax: float = 8000.0


@dataclass(frozen=True)
class TokenizerConfig:
    """s3tokenizer 0.3.0 ``S3TokenizerV2`` (``ModelConfig``) as chatterbox's ``S3Tokenizer`` wraps it."""
    sample_rate: int = S3_SR
    n_fft: int = 400
    hop: int = 160              # 100 mel frames/s
    n_mels: int = 128
    token_rate: int = 25
    n_state: int = 1280
    n_head: int = 20
    n_layer: int = 6
    stride: int = 2             # each of the two input convs
    fsmn_kernel: int = 31
    rotary_dim: int = 64
    rotary_len: int = 2048
    fsq_level: int = 3          # FSQ: 8 dims rounded to {-1, 0, 1}, base-3 code
    window_frames: int = 3000   # 30 s: longer audio goes through the sliding-window path
    overlap_frames: int = 400   # 4 s overlap between windows


@dataclass(frozen=True)
class CAMPPlusConfig:
    """chatterbox ``xvector.CAMPPlus`` (3D-Speaker) with its defaults; 16 kHz Kaldi fbank input."""
    sample_rate: int = S3_SR
    feat_dim: int = 80
    embedding_size: int = 192
    m_channels: int = 32                      # FCM head
    head_blocks: tuple = (2, 2)
    init_channels: int = 128
    growth_rate: int = 32
    bn_size: int = 4
    block_layers: tuple = (12, 24, 16)        # CAMDenseTDNNBlocks: layers, kernel, dilation
    block_kernels: tuple = (3, 3, 3)
    block_dilations: tuple = (1, 2, 2)
    seg_len: int = 100                        # CAM segment pooling
    bn_eps: float = 1e-5


@dataclass(frozen=True)
class FlowEncoderConfig:
    """``UpsampleConformerEncoder`` as ``S3Token2Mel`` builds it (ESPnet rel-pos conformer)."""
    size: int = 512             # input_size = output_size
    attention_heads: int = 8
    linear_units: int = 2048
    num_blocks: int = 6
    num_up_blocks: int = 4
    pre_lookahead_len: int = 3
    up_stride: int = 2          # 25 Hz tokens -> 50 Hz mel frames (token_mel_ratio)


@dataclass(frozen=True)
class FlowDecoderConfig:
    """The CFM estimator ``ConditionalDecoder`` (causal, channels=[256]) and chatterbox's
    ``CFM_PARAMS`` solver settings (Euler, cosine t schedule with CFG; meanflow: linear, no CFG)."""
    in_channels: int = 320      # x, mu, speaker, cond: 4 * 80
    out_channels: int = 80
    channels: int = 256
    n_blocks: int = 4           # transformer blocks per U-net block
    num_mid_blocks: int = 12
    num_heads: int = 8
    head_dim: int = 64
    ff_mult: int = 4
    inference_cfg_rate: float = 0.7
    n_timesteps: int = 10       # chatterbox's S3Token2Wav default
    meanflow_timesteps: int = 2


@dataclass(frozen=True)
class FlowConfig:
    """``CausalMaskedDiffWithXvec``: token embedding, encoder, x-vector projection, decoder."""
    vocab_size: int = SPEECH_VOCAB_SIZE
    input_size: int = 512
    output_size: int = 80       # mel bins
    spk_embed_dim: int = 192
    encoder: FlowEncoderConfig = field(default_factory=FlowEncoderConfig)
    decoder: FlowDecoderConfig = field(default_factory=FlowDecoderConfig)


@dataclass
class HiFTConfig:
    """HiFT vocoder as ``S3Token2Wav`` builds ``HiFTGenerator``."""
    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = S3GEN_SR
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: list = field(default_factory=lambda: [8, 5, 3])
    upsample_kernel_sizes: list = field(default_factory=lambda: [16, 11, 7])
    n_fft: int = 16
    hop_len: int = 4
    resblock_kernel_sizes: list = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list = field(default_factory=lambda: [[1, 3, 5]] * 3)
    source_resblock_kernel_sizes: list = field(default_factory=lambda: [7, 7, 11])
    source_resblock_dilation_sizes: list = field(default_factory=lambda: [[1, 3, 5]] * 3)
    lrelu_slope: float = 0.1  # S3Token2Wav does not pass it: HiFTGenerator's default
    audio_limit: float = 0.99
    f0_cond_channels: int = 512

    @property
    def upsample_scale(self) -> int:  # samples per mel frame (480)
        scale = self.hop_len
        for r in self.upsample_rates:
            scale *= r
        return scale


# ---------------------------------------------------------------------------------- run time
@dataclass
class S3GenConfig:
    meanflow: bool = False           # Turbo/Nano checkpoint (s3gen_meanflow.safetensors)
    n_timesteps: int | None = None   # None: 10 (standard, cosine, CFG 0.7) or 2 (meanflow)
    dtype: str = "float32"           # float16/bfloat16: weight storage only (activations stay float32 by
                                     # MLX type promotion); not parity-tested

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.n_timesteps is not None and int(self.n_timesteps) < 1:
            raise ValueError(f"n_timesteps must be >= 1, got {self.n_timesteps}")

    @property
    def steps(self) -> int:
        if self.n_timesteps:
            return int(self.n_timesteps)
        return default_steps(self.meanflow)


def default_steps(meanflow: bool, decoder: FlowDecoderConfig = FlowDecoderConfig()) -> int:
    """chatterbox's ODE step count: 10 (standard) or 2 (meanflow)."""
    return decoder.meanflow_timesteps if meanflow else decoder.n_timesteps
