#!/usr/bin/env bash
# Issue #6 at GPU scale, sized for one 15-minute device lease (about 8 minutes of run):
# the CT arms of bench/pretrain_gain.py with a real ViT (vit_tiny_patch16_224 at 224 px,
# 14x14 patches), 300 synthetic patients (10 % labelled), a ResNet-18 teacher, one seed,
# budgets in wall seconds. On the lent machine python3 holds torch, timm and opencv but
# not pydicom: carry its wheel in .whl/ (ignored by git):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .whl pydicom==3.0.2
#   device run: carry [".whl"], command "bash bench/pretrain_gain_gpu.sh", timeout 600
#
# Everything can be overridden from the environment, e.g. a CPU dry run of the script:
#   DEVICE=cpu PATIENTS=6 SIZE=64 IMG=32 MODEL=vit_test_tiny TEACHER=cnn_test_tiny \
#   BUDGET=4 WORKERS=0 PY=.venv/bin/python bash bench/pretrain_gain_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if ! "$PY" -c "import pydicom" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUTDIR=${OUT:-bench/results}
mkdir -p "$OUTDIR"
"$PY" - <<'EOF' || true
import torch, timm
print("torch", torch.__version__, "timm", timm.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
"$PY" bench/pretrain_gain.py --device "${DEVICE:-cuda}" --datasets ct \
  --patients "${PATIENTS:-300}" --slices 8 --size "${SIZE:-256}" \
  --ct-img-size "${IMG:-224}" --model "${MODEL:-vit_tiny_patch16_224}" \
  --teacher-model "${TEACHER:-resnet18}" --batch-size 64 --decoder-dim 128 \
  --budget-s "${BUDGET:-90}" --seeds 0 --workers "${WORKERS:-8}" --threads 4 \
  --out "$OUTDIR/pretrain_gain_gpu.json"
