#!/usr/bin/env bash
# Seeds each fuzz target's corpus (fuzz/corpus/TARGET/) from the repository's own files: the
# small test models, .npy references, the sidecar, the board profiles, and an XWD screen file
# like the one Xvfb -fbdir keeps. libFuzzer grows the corpus from there; the committed corpus
# is the minimized result of the runs in the README (cargo fuzz cmin / -merge=1).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/{model,npy,sidecar,board,xwd}
for f in ../tests/fixtures/models/*.onnx; do
  if [ "$(stat -c %s "$f")" -le 16384 ]; then cp "$f" corpus/model/; fi
done
for f in ../tests/fixtures/ort/*_t.npy ../tests/fixtures/ort/gray12_tint_1_*.npy; do
  cp "$f" corpus/npy/
done
cp ../tests/fixtures/models/sidecar.json corpus/sidecar/
cp ../boards/*.toml corpus/board/
python3 - <<'PY'
import struct
# XWD version 7, ZPixmap, 8x6 at 32 bits per pixel, 2-entry colour map, then the pixels.
w, h, bpp, ncolors = 8, 6, 32, 2
f = [0] * 25
f[0], f[1], f[2], f[3] = 100, 7, 2, 24
f[4], f[5], f[7], f[11], f[12] = w, h, 0, bpp, w * 4
f[14], f[15], f[16], f[19] = 0xFF0000, 0xFF00, 0xFF, ncolors
data = struct.pack(">25I", *f) + bytes(12 * ncolors) + bytes(w * h * 4)
open("corpus/xwd/xvfb-8x6.xwd", "wb").write(data)
f[11], f[12], f[14], f[15], f[16] = 16, w * 2, 0xF800, 0x7E0, 0x1F
open("corpus/xwd/rgb565-8x6.xwd", "wb").write(struct.pack(">25I", *f) + bytes(12 * ncolors) + bytes(w * h * 2))
PY
ls corpus/* | head -50
