"""Rebuild ``src/ferwild/weights/blazeface/face_detection_short_range.onnx`` from the mediapipe wheel.

Steps (network needed for pip; run from the repository root):

1. download ``mediapipe==0.10.14`` (no dependencies) and take
   ``mediapipe/modules/face_detection/face_detection_short_range.tflite`` from it;
2. convert it with ``tflite2onnx`` in a throwaway virtualenv (it pins nothing ferwild needs);
3. compare ONNX Runtime with the TFLite interpreter (``ai-edge-litert``) on random inputs;
4. print the sha256 to record in the weights README.

    python tools/convert_blazeface.py [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
CHECK = r'''
import sys, numpy as np, onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter
tfl, onx = sys.argv[1], sys.argv[2]
it = Interpreter(model_path=tfl); it.allocate_tensors()
inp = it.get_input_details()[0]["index"]; outs = [d["index"] for d in it.get_output_details()]
s = ort.InferenceSession(onx, providers=["CPUExecutionProvider"])
worst = 0.0
for seed in range(5):
    x = np.random.default_rng(seed).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    it.set_tensor(inp, x); it.invoke()
    ref = [it.get_tensor(o) for o in outs]
    nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    got = s.run(["regressors", "classificators"], {s.get_inputs()[0].name: nchw})
    worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(ref, got)))
print(f"max |ONNX - TFLite| = {worst:.2e}")
sys.exit(0 if worst < 1e-3 else 1)
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("src/ferwild/weights/blazeface"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "download", "mediapipe==0.10.14", "--no-deps", "-d", str(tmp)],
                       check=True)
        wheel = next(tmp.glob("mediapipe-0.10.14-*.whl"))
        tflite = tmp / "face_detection_short_range.tflite"
        tflite.write_bytes(zipfile.ZipFile(wheel).read(MEMBER))
        venv = tmp / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        py = str(venv / "bin" / "python")
        subprocess.run([py, "-m", "pip", "install", "-q", "tflite2onnx==0.4.1", "ai-edge-litert", "onnxruntime"],
                       check=True)
        onnx_path = args.out / "face_detection_short_range.onnx"
        subprocess.run([str(venv / "bin" / "tflite2onnx"), str(tflite), str(onnx_path)], check=True)
        subprocess.run([py, "-c", CHECK, str(tflite), str(onnx_path)], check=True)
    print("sha256", hashlib.sha256(onnx_path.read_bytes()).hexdigest())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
