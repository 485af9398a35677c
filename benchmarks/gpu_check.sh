#!/usr/bin/env bash
# The checks and figures that need a CUDA GPU, in one go (about 6 minutes on one H100):
#   1. the quick start's main job on the GPU (bf16 autocast, channels_last, pinned memory), through component.yaml;
#   2. the same command under torchrun with one process (NCCL process group, DDP wrapper, rank-0 output);
#   3. the throughput benchmark: resnet50 at 224x224 (batch 256 and the default 16), resnet18 at 32x32 batch 16.
# Usage: bash benchmarks/gpu_check.sh [RESULTS_DIR]   (the package must be importable: pip install . or PYTHONPATH=src)
set -uo pipefail
cd "$(dirname "$0")/.."
results=${1:-runs/gpu_check}
mkdir -p "$results"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$python" -c "import torch, torchvision, mlflow; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
'mlflow', mlflow.__version__, 'cuda', torch.cuda.is_available(), 'bf16', torch.cuda.is_bf16_supported())"

work=$(mktemp -d)
echo "== 1. main job on the GPU"
timeout 240 "$python" -m train_pytorch_model.local.sample_job --workdir "$work/sample" 2>&1 | tee "$results/sample.log" \
    | grep -v "batch .*img/s" | tail -14

echo "== 2. torchrun, one process, NCCL"
MLFLOW_TRACKING_URI="sqlite:///$work/ddp.db" timeout 180 torchrun --standalone --nproc_per_node=1 \
    -m train_pytorch_model.train --untrained-model "$work/sample/untrained_model" \
    --training-dataset "$work/sample/data/train" --validation-dataset "$work/sample/data/valid" \
    --trained-model "$work/ddp_model" --epochs 2 2>&1 | tee "$results/ddp.log" \
    | grep -v "batch .*img/s" | tail -10
ls "$work/ddp_model"

echo "== 3. throughput"
for config in "resnet50 224 256 8192" "resnet50 224 16 2048" "resnet18 32 16 4096"; do
    read -r model size batch images <<<"$config"
    timeout 240 "$python" benchmarks/throughput.py --model "$model" --image-size "$size" --batch-size "$batch" \
        --images "$images" --epochs 3 --json "$results/${model}_${size}_b${batch}.json" 2>&1 \
        | tee "$results/${model}_${size}_b${batch}.log" | tail -14
done
rm -rf "$work"
