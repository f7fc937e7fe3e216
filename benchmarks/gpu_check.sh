#!/usr/bin/env bash
# The GPU acceptance check (`make gpu-check`): one script for one H100, done in under 8 minutes, that ends with ONE
# markdown table (check, value, target, result). Steps, each independent (a failing or timed-out step marks its own
# rows failed and the script goes on), each under `timeout`:
#   1. pytest -m gpu tests/training/test_gpu.py
#   2. train / inference img/s of resnet50, se_resnet50, eca_resnet50: bf16 autocast + channels_last, batch 256,
#      cudnn.benchmark (benchmarks/bench_throughput.py), with the peak GPU memory of each model
#   3. the DALI GPU input pipeline (nvJPEG) on generated ImageNet-sized JPEGs (benchmarks/bench_input_pipeline.py)
#   4. step 2 again with torch.compile (last: compiling three ResNet-50s takes the longest; it gets what is left)
# Targets: ECA-ResNet-50 bf16 training >= 3000 img/s; ECA / ResNet-50 training >= 0.95x; the DALI GPU pipeline
# >= 2x the measured ECA-ResNet-50 training rate (2 x 3000 if that was not measured).
#
# Environment:
#   PYTHON            the interpreter (default: .venv/bin/python if present, else python3); the platform need not be
#                     pip-installed (PYTHONPATH gets the repo root) and DALI is optional ("unmeasured" without it)
#   OUT               folder for the step logs and JSON results (default: a new temp folder), in $OUT/gpu_check
#   GPU_CHECK_BUDGET  seconds for all steps (default 450, leaving room within 8 minutes)
#   GPU_CHECK_SMOKE=1 run every step on the CPU with tiny sizes (tests the plumbing on a machine without a GPU)
# Without a GPU (and without GPU_CHECK_SMOKE) it prints one line and exits 0.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
SMOKE="${GPU_CHECK_SMOKE:-0}"
BUDGET="${GPU_CHECK_BUDGET:-450}"

if [[ "$SMOKE" != 1 ]]; then
    smi="$(nvidia-smi -L 2>/dev/null | head -1)"
    cuda="$("$PYTHON" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null)"
    if [[ -z "$smi" || "$cuda" != True ]]; then
        echo "gpu-check: no CUDA GPU here (nvidia-smi: ${smi:-none}; torch.cuda.is_available(): ${cuda:-no torch}); nothing to check"
        exit 0
    fi
fi

if [[ -n "${OUT:-}" ]]; then OUTDIR="$OUT/gpu_check"; else OUTDIR="$(mktemp -d -t gpu_check.XXXXXX)"; fi
mkdir -p "$OUTDIR"
LOG="$OUTDIR/steps.log"  # every step's output, one after another (few files: the device tool returns at most 8)
ROWS="$(mktemp -t gpu_check_rows.XXXXXX)"
STEP_OUT="$(mktemp -t gpu_check_step.XXXXXX)"
: >"$LOG"
HAVE_TIMEOUT=0
command -v timeout >/dev/null && HAVE_TIMEOUT=1

MODELS=(--models se_resnet50 eca_resnet50)  # resnet50, their baseline, is always measured too
if [[ "$SMOKE" == 1 ]]; then
    DEVICE=cpu
    TP_ARGS=(--device cpu --batch-size 2 --image-size 64 --rounds 2 --bf16 --channels-last)
    COMPILE_ARGS=(--device cpu --batch-size 2 --image-size 32 --rounds 1 --bf16 --channels-last --compile --warmup 2
                  --models eca_mobilenet_v2)
    DALI_ARGS=(--device cpu --images 64 --batch-size 16 --rounds 1)
    COMPILE_MODELS=(mobilenet_v2 eca_mobilenet_v2)
    BATCH=2
else
    DEVICE=cuda
    TP_ARGS=(--device cuda --batch-size 256 --rounds 20 --warmup 3 --bf16 --channels-last --cudnn-benchmark)
    # ECA before SE: if the budget runs out, the ECA / ResNet-50 ratio is what must be there
    COMPILE_ARGS=("${TP_ARGS[@]}" --compile --rounds 10 --models eca_resnet50 se_resnet50)
    DALI_ARGS=(--device gpu --images 8192 --batch-size 256 --rounds 3 --threads 8)
    COMPILE_MODELS=(resnet50 eca_resnet50 se_resnet50)
    BATCH=256
fi
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$ROWS"; }

remaining() { echo $((BUDGET - SECONDS)); }

# run_step NAME CAP_SECONDS CMD...: runs CMD under a timeout of min(CAP, what is left of the budget), output to the
# log; sets STEP_RC (124 = timed out) and STEP_WHY (a short reason for failed rows).
run_step() {
    local name="$1" cap="$2"
    shift 2
    local left
    left="$(remaining)"
    local limit=$((cap < left ? cap : left))
    STEP_WHY=""
    if ((limit < 15)); then
        STEP_RC=124
        STEP_WHY="not run: the ${BUDGET}s budget was spent"
        echo "=== $name: skipped, budget spent" | tee -a "$LOG" >&2
        return
    fi
    echo "=== $name (timeout ${limit}s): $*" | tee -a "$LOG" >&2
    local started=$SECONDS
    if ((HAVE_TIMEOUT)); then
        timeout --kill-after=10 "$limit" "$@" >"$STEP_OUT" 2>&1
    else
        "$@" >"$STEP_OUT" 2>&1
    fi
    STEP_RC=$?
    cat "$STEP_OUT" >>"$LOG"
    echo "=== $name: exit $STEP_RC after $((SECONDS - started))s" | tee -a "$LOG" >&2
    if ((STEP_RC == 124 || STEP_RC == 137)); then
        STEP_WHY="timed out after ${limit}s"
    elif ((STEP_RC != 0)); then
        # the last line the step printed (a traceback's error, usually), made safe for a table cell
        STEP_WHY="exit $STEP_RC: $(grep -v '^\s*$' "$STEP_OUT" | tail -1 | tr -d '|\t' | cut -c1-100)"
    fi
}

# ---------------------------------------------------------------------------------------------------------- env
ENV_LINE="$("$PYTHON" - "$DEVICE" 2>&1 <<'EOF'
import sys
import torch
name = torch.cuda.get_device_name(0) if sys.argv[1] == "cuda" else "CPU (smoke run)"
print(f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, python {sys.version.split()[0]}")
EOF
)" || ENV_LINE="python failed: $(echo "$ENV_LINE" | tail -1)"
echo "gpu-check on $ENV_LINE; python $PYTHON; outputs in $OUTDIR" | tee -a "$LOG" >&2

# ------------------------------------------------------------------------------------------------------- pytest
run_step pytest 150 "$PYTHON" -m pytest -m gpu tests/training/test_gpu.py -q -p no:cacheprovider
summary="$(grep -E '[0-9]+ (passed|failed|skipped|errors?|deselected)' "$STEP_OUT" | tail -1 | sed -E 's/^=+ //; s/ =+$//')"
count() { echo "$summary" | grep -Eo "[0-9]+ $1" | grep -Eo '^[0-9]+' || echo 0; }
passed="$(count passed)"
failed=$(($(count failed) + $(count 'errors?')))
skipped="$(count skipped)"
if [[ -z "$summary" || (-n "$STEP_WHY" && "$STEP_RC" != 1) ]]; then  # no test ran: crashed, timed out, no pytest
    row "pytest -m gpu tests/training/test_gpu.py" "${summary:-no summary} ($STEP_WHY)" "all pass, none skipped" fail
elif [[ "$SMOKE" == 1 ]]; then
    row "pytest -m gpu tests/training/test_gpu.py" "$passed passed, $failed failed, $skipped skipped" \
        "all pass, none skipped" "$([[ $failed == 0 ]] && echo 'pass (smoke: skips expected)' || echo fail)"
else
    ok=fail
    [[ "$STEP_RC" == 0 && "$failed" == 0 && "$skipped" == 0 && "$passed" -gt 0 ]] && ok=pass
    row "pytest -m gpu tests/training/test_gpu.py" "$passed passed, $failed failed, $skipped skipped" "all pass, none skipped" $ok
fi

# ----------------------------------------------------------------------------------------- throughput, eager
# throughput_rows LABEL JSON MODELS...: the rows of one bench_throughput.py run (failed rows if its JSON is missing).
throughput_rows() {
    local label="$1" json="$2"
    shift 2
    if ! "$PYTHON" - "$label" "$json" "$BATCH" "$SMOKE" "${STEP_WHY:-}" "$@" >>"$ROWS" 2>>"$LOG" <<'EOF'
import json, sys
label, path, batch, smoke, why = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5]
wanted = sys.argv[6:]
try:
    data = json.load(open(path))
except (OSError, ValueError):
    data = {"models": {}}
models = data["models"]
left_out = data.get("left_out", [])
fail = f"failed: {why or 'no result'}"
fail_result = "fail"
if left_out and not why:  # the run ended normally but its time budget left these models out
    fail, fail_result = "unmeasured: time budget spent", "unmeasured"
def row(check, value, target, result):
    print(f"{check}\t{value}\t{target}\t{result}")
for name in wanted:
    m = models.get(name)
    for kind in ("train", "infer"):
        check = f"{name} {kind} img/s ({label}, batch {batch})"
        target, result = "-", "info"
        if name == "eca_resnet50" and kind == "train" and label.startswith("bf16") and "compile" not in label:
            target, result = ">= 3000", ("pass" if m and m[kind] >= 3000 else "fail")
        row(check, f"{m[kind]:.0f}" if m else fail, target, result if m else fail_result)
    if m and "train_mib" in m:
        row(f"peak GPU memory, {name} ({label})", f"train {m['train_mib'] / 1024:.1f} GiB, infer "
            f"{m['infer_mib'] / 1024:.1f} GiB", "-", "info")
    elif not m and not smoke:
        row(f"peak GPU memory, {name} ({label})", fail, "-", fail_result)
base, eca = models.get("resnet50"), models.get("eca_resnet50")
if base and eca:
    ratio = eca["train"] / base["train"]
    row(f"eca_resnet50 / resnet50 train ({label})", f"{ratio:.3f}x", ">= 0.95x", "pass" if ratio >= 0.95 else "fail")
elif "eca_resnet50" in wanted:
    row(f"eca_resnet50 / resnet50 train ({label})", fail, ">= 0.95x", fail_result)
EOF
    then
        row "throughput ($label)" "failed: could not read $json" "-" fail
    fi
}

run_step "throughput eager" 120 "$PYTHON" benchmarks/bench_throughput.py "${TP_ARGS[@]}" "${MODELS[@]}" \
    --markdown --max-seconds 90 --json "$OUTDIR/eager.json"
throughput_rows "bf16+channels_last, eager" "$OUTDIR/eager.json" resnet50 se_resnet50 eca_resnet50
ECA_TRAIN="$("$PYTHON" -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["models"]["eca_resnet50"]["train"]))' \
    "$OUTDIR/eager.json" 2>/dev/null)"

# ------------------------------------------------------------------------------------------------- DALI, GPU
if [[ -n "$ECA_TRAIN" && "$SMOKE" != 1 ]]; then
    DALI_TARGET=$((2 * ECA_TRAIN)); DALI_TARGET_TEXT=">= $DALI_TARGET (2x ECA train)"
else
    DALI_TARGET=6000; DALI_TARGET_TEXT=">= 6000 (2x 3000)"
fi
DALI_CHECK="DALI GPU pipeline img/s (nvJPEG, 8 threads, batch 256, generated JPEGs)"
[[ "$SMOKE" == 1 ]] && DALI_CHECK="DALI CPU pipeline img/s (smoke: 1 core, 64 JPEGs)"
if ! "$PYTHON" -c 'import nvidia.dali' >/dev/null 2>&1; then
    echo "=== input pipeline: unmeasured, DALI not installed" | tee -a "$LOG" >&2
    row "$DALI_CHECK" "unmeasured: DALI not installed" "$DALI_TARGET_TEXT" unmeasured
else
    run_step "input pipeline" 150 "$PYTHON" benchmarks/bench_input_pipeline.py "${DALI_ARGS[@]}" \
        --json "$OUTDIR/dali.json"
    if ! "$PYTHON" - "$OUTDIR/dali.json" "$DALI_CHECK" "$DALI_TARGET" "$DALI_TARGET_TEXT" "$SMOKE" \
        "${STEP_WHY:-}" >>"$ROWS" 2>>"$LOG" <<'EOF'
import json, sys
path, check, target, target_text, smoke, why = sys.argv[1:7]
try:
    data = json.load(open(path))
except (OSError, ValueError):
    data = {}
rates = data.get("images_per_s", {})
dali = rates.get("dali-cpu" if smoke == "1" else "dali-gpu")
if "unmeasured" in data:
    print(f"{check}\tunmeasured: {data['unmeasured']}\t{target_text}\tunmeasured")
elif dali is None:
    print(f"{check}\tfailed: {why or data.get('errors') or 'no result'}\t{target_text}\tfail")
else:
    print(f"{check}\t{dali:.0f}\t{target_text}\t{'pass' if dali >= float(target) else 'fail'}")
    threads = data.get("threads")
    for name in ("plain torchvision", "platform torchvision"):
        if name in rates:
            print(f"{name} img/s (same JPEGs, {threads} workers)\t{rates[name]:.0f}\t-\tinfo")
    if "plain torchvision" in rates:
        print(f"DALI / plain torchvision\t{dali / rates['plain torchvision']:.2f}x\t-\tinfo")
EOF
    then
        row "$DALI_CHECK" "failed: could not read dali.json" "$DALI_TARGET_TEXT" fail
    fi
fi

# ------------------------------------------------------------------------------------- throughput, compiled
# Whatever is left of the budget (less 10 s for the table); bench_throughput stops starting new models 100 s before
# the hard timeout, so a slow compile costs only the models not yet compiled.
left=$(($(remaining) - 10))
run_step "throughput torch.compile" "$left" "$PYTHON" benchmarks/bench_throughput.py "${COMPILE_ARGS[@]}" \
    --markdown --max-seconds $((left > 130 ? left - 100 : 30)) \
    --json "$OUTDIR/compile.json"
throughput_rows "bf16+channels_last, torch.compile" "$OUTDIR/compile.json" "${COMPILE_MODELS[@]}"

# -------------------------------------------------------------------------------------------------- the table
{
    echo "GPU check: $ENV_LINE; $(date -u +%Y-%m-%dT%H:%MZ); $SECONDS s; results: pass / fail / unmeasured (info: no target)"
    echo
    echo "| check | value | target | result |"
    echo "|---|---|---|---|"
    while IFS=$'\t' read -r check value target result; do
        echo "| $check | $value | $target | $result |"
    done <"$ROWS"
} >"$OUTDIR/summary.md"
echo
cat "$OUTDIR/summary.md"
failures="$(cut -f4 "$ROWS" | grep -c '^fail')"
rm -f "$ROWS" "$STEP_OUT"
((failures == 0))  # the exit status: 1 when any check failed
