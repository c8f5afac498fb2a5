"""Benchmark: activation codec vs numpy and memcpy; preprocessing vs numpy (and Pillow/OpenCV
if installed). Prints a table and a JSON line.
Run: .venv/bin/python benchmarks/kernels_codec_preprocess.py"""

from __future__ import annotations

import json
import time

import numpy as np

from edgekit.native import codec, preprocess, variant


def best_ms(fn, reps: int = 20) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(128 * 768 * 4).astype(np.float32)  # 1.5 MB activation
    q, s = np.empty(x.shape, np.int8), np.empty(x.size // 32, np.float16)
    rows = {}
    rows["memcpy fp32"] = best_ms(lambda: np.copyto(np.empty_like(x), x))
    rows["encode_q8 kernel"] = best_ms(lambda: codec.encode_q8(x))
    rows["encode_q8 numpy"] = best_ms(lambda: codec._encode_numpy(x, 32, q, s))
    qq, ss = codec.encode_q8(x)
    rows["decode_q8 kernel"] = best_ms(lambda: codec.decode_q8(qq, ss, x.shape))
    rows["decode_q8 numpy"] = best_ms(
        lambda: (qq.reshape(-1, 32).astype(np.float32) * ss.astype(np.float32)[:, None]))
    rows["to_fp16 kernel"] = best_ms(lambda: codec.to_fp16(x))
    rows["to_fp16 numpy"] = best_ms(lambda: x.astype(np.float16))
    img = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    m, sd = np.array(mean, np.float32), np.array(std, np.float32)
    norm = preprocess.Normalize(mean, std)
    rows["preprocess kernel 720p->224 NCHW f32"] = best_ms(
        lambda: preprocess.image_to_tensor(img, (224, 224), norm))
    planned = preprocess.plan(img, (224, 224), norm, "NCHW", None)
    rows["preprocess numpy"] = best_ms(lambda: preprocess._numpy_impl(*planned))
    try:
        import cv2

        rows["preprocess opencv"] = best_ms(lambda: ((cv2.resize(img, (224, 224)).astype(
            np.float32) / 255 - m) / sd).transpose(2, 0, 1))
    except ImportError:
        pass
    try:
        from PIL import Image

        pil = Image.fromarray(img)
        rows["preprocess pillow"] = best_ms(lambda: ((np.asarray(pil.resize(
            (224, 224), Image.BILINEAR), np.float32) / 255 - m) / sd).transpose(2, 0, 1))
    except ImportError:
        pass
    mb = x.nbytes / 1e6
    print(f"variant {variant()}, activation {mb:.1f} MB fp32, image 720x1280x3 -> 224x224")
    for k, v in rows.items():
        print(f"{k:40s} {v:9.3f} ms")
    speed = {
        "encode_vs_numpy": rows["encode_q8 numpy"] / rows["encode_q8 kernel"],
        "decode_vs_numpy": rows["decode_q8 numpy"] / rows["decode_q8 kernel"],
        "encode_GBps": mb / rows["encode_q8 kernel"], "memcpy_GBps": mb / rows["memcpy fp32"],
        "preprocess_vs_numpy":
            rows["preprocess numpy"] / rows["preprocess kernel 720p->224 NCHW f32"],
    }
    for k, v in speed.items():
        print(f"{k:40s} {v:9.2f}")
    print(json.dumps({"variant": variant(), "ms": rows, **speed}))


if __name__ == "__main__":
    main()
