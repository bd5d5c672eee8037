#!/usr/bin/env bash
# One prepared check on an accelerator machine (GPU or TPU), at most 8 minutes, run as it is:
#
#     bash experiments/device_check.sh [OUT_DIR]          # default: $OUT, else device_check_out
#     bash experiments/device_check.sh OUT_DIR --smoke    # toy sizes, no install: its test
#
# 1. installs this project beside the machine's own JAX (pip --no-deps: never replaces its
#    jax, jaxlib or their CUDA/TPU plugins; falls back to PYTHONPATH where pip cannot);
# 2. env.json: versions and devices;
# 3. bench.json: experiments/bench.py at the papers' setting (ResNet-18 width 64, 32x32,
#    batch 256): every classification method's step, its memory, and PyTorch's reference
#    steps on CUDA where torch sees a GPU (the DDPM rows left out for time);
# 4. dit_memory.json: the DiT-XL/2 SFR-on-with-HVP step at batch 32 compiled and run, with
#    XLA's estimate and the device's measured peak (experiments/bench_dit_memory.py --run);
#    Stable Diffusion's estimate joins when the SD task exists;
# 5. determinism.json: two identical runs (plain, SalUn, SFR-on steps), bit for bit or not;
# 6. device_check.json: all of the above in one file (and each step's last log lines).
# Each step has its own time limit, so a slow or failing one never costs the others; their
# sum with the install's is 475 s.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-device_check_out}}
mkdir -p "$out"
bench_size=(--width 64 --image-size 32 --batch 256 --steps 10 --repeats 5 --no-diffusion)
dit_size=()
det_size=()
scale=1
if [ "${2:-}" = --smoke ]; then
  scale=4  # the limits are for an accelerator; the smoke run shares a 2-core CPU in CI
  bench_size=(--model resnet1 --width 4 --image-size 8 --batch 16 --steps 1 --repeats 1
              --no-diffusion)
  dit_size=(--size tiny --latent 8 --batch 4)
  det_size=(--model resnet1 --steps 2 --width 4 --image-size 8 --batch 16)
fi
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# JAX and PyTorch share the GPU in bench.py: JAX takes memory as it needs it rather than 75%
# of the card up front (the measured peaks are then the programs' own).
export XLA_PYTHON_CLIENT_PREALLOCATE=false

step() {  # step NAME SECONDS COMMAND...: runs it under a limit, its output in OUT/NAME.log
  local name=$1 limit=$(($2 * scale)); shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$out/steps.log"
}

if [ "${2:-}" != --smoke ]; then  # (the smoke test runs in an installed checkout)
  if ! timeout 45 $py -m pip install -q --no-deps --no-build-isolation -e . \
      > "$out/install.log" 2>&1; then
    echo "pip install failed (install.log); using PYTHONPATH" | tee -a "$out/steps.log"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step env 30 $py experiments/device_check.py env --json "$out/env.json"
torch_device=$($py -c 'import torch; print("cuda" if torch.cuda.is_available() else "none")' \
               2>/dev/null || echo none)
torch_args=(--torch-device cuda)
[ "$torch_device" = cuda ] || torch_args=(--no-torch)
step bench 240 $py experiments/bench.py "${bench_size[@]}" "${torch_args[@]}" \
  --json "$out/bench.json"
step dit_memory 100 $py experiments/bench_dit_memory.py --run --hvp linearize "${dit_size[@]}" \
  --json "$out/dit_memory.json"
step determinism 60 $py experiments/device_check.py determinism "${det_size[@]}" \
  --json "$out/determinism.json"
$py experiments/device_check.py collect "$out" > "$out/device_check.json"
echo "wrote $out/device_check.json"
