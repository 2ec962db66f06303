#!/usr/bin/env bash
# The GPU path in under 8 minutes on one GPU (issue 13, item 6):
#   1. training clips/s of each model at full width, fp32 and bf16 / fp16 autocast (benchmarks/bench_precision.py);
#   2. the sweep on the synthetic `mini` set at full width through pass 2, whose 6 units share the GPU
#      (ray.units_per_gpu: 0 = evenly, 1/6 GPU each), bf16 autocast, short trainings.
# Run from the repository root:  bash benchmarks/gpu_check.sh [OUT_DIR]   (default: a new temporary folder)
# Prints both tables and the sweep's console; every file it writes is under OUT_DIR.
set -euo pipefail

out="${1:-$(mktemp -d -t kdsed-gpu-check-XXXXXX)}"
mkdir -p "$out"
python="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "== kdsed GPU check, results under $out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "(nvidia-smi not found)"
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"

echo "== 1. training clips/s at full width, by precision"
start=$SECONDS
timeout 150 "$python" benchmarks/bench_precision.py --device cuda --widths 1.0 --clips 1024 --epochs 3 \
    | tee "$out/precision.md"
echo "(${SECONDS}s so far)"

echo "== 2. sweep on mini at full width through pass 2 (6 units sharing the GPU)"
cat > "$out/gpu_mini.yaml" <<YAML
data: {synth_preset: mini, synth_seed: 0, workdir: $out/work}
deep: {name: deep, width: 1.0}
shallow: {name: shallow, width: 1.0}
baseline: {name: baseline, width: 1.0}
tagging_train: {epochs: 4, patience: 2, strong_loss_weight: 0.0, mixed_precision: bf16}
train: {epochs: 3, patience: 2, mixed_precision: bf16}
distill: {passes: 2}
ray: {use_gpu: "yes", units_per_gpu: 0, tune_trials_per_variant: 3}
tracking: {storage: $out/storage, tracking_uri: "sqlite:///$out/mlflow.db"}
YAML
(cd "$out" && timeout 330 "$python" -m kdsed.sweep --config "$out/gpu_mini.yaml" 2>&1 | tee "$out/sweep.txt")
echo "== GPU check done in $((SECONDS - start)) s; results under $out"
