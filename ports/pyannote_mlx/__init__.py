"""pyannote segmentation-3.0 (PyanNet) and the segmentation step of pyannote.audio's Inference, in MLX."""
from ports.common.blas import preload_blas

# The mlx[cpu] wheel's reference BLAS is ~25x slower; an optimized one must be loaded first.
preload_blas()
