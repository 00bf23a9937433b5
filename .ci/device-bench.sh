#!/usr/bin/env bash
# One call on the lent GPU machine (issue 7): `fovea bench` in f16 and f32 over the
# reference table's shapes through Vulkan, JSON and tables into $OUT. Prepare here:
#   bash ../shared/tools/device-vulkan-prep.sh            # Vulkan loader debs -> .gl/
#   cargo build --release -p fovea-cli && mkdir -p .devbin && cp target/release/fovea .devbin/
# then: run(command="bash .ci/device-bench.sh", carry=[".gl", ".devbin"], timeout_s=540)
set -euo pipefail
OUT=${OUT:-/tmp/fovea-bench}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
BIN=${BIN:-.devbin/fovea}
"$BIN" info | tee "$OUT/info.txt"
# SD UNets with random weights attend almost uniformly: --prune-share sets the pruned
# share (0.4, near the published average) to measure what skipping saves.
for dt in f16 f32; do
  flag=""
  [ "$dt" = f32 ] && flag="--f32"
  timeout 230 "$BIN" bench $flag --kernels full --unets sd21,sd15 --latents 64,128 \
    --batches 1,2 --vae 512,1024 --prune-share 0.4 --repeats 7 --warmup 2 \
    -o "$OUT/bench-$dt.json" 2>&1 | tee "$OUT/bench-$dt.txt" || echo "bench $dt: exit $?"
done
# The default model with its trained attention and the default pruning threshold.
timeout 60 "$BIN" bench --kernels none --unets default --prune 0.3 --repeats 7 \
  -o "$OUT/bench-default.json" 2>&1 | tee "$OUT/bench-default.txt" || echo "bench default: exit $?"
