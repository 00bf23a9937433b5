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
for dt in f16 f32; do
  flag=""
  [ "$dt" = f32 ] && flag="--f32"
  timeout 240 "$BIN" bench $flag --kernels full --unets sd21,sd15,default --latents 64,128 \
    --batches 1,2 --vae 512,1024 --prune 0.9 --repeats 7 --warmup 2 -o "$OUT/bench-$dt.json" \
    | tee "$OUT/bench-$dt.txt" || echo "bench $dt: exit $?"
done
