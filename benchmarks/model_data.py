"""Real inputs for the model benchmarks: skimage photos and scanned-text crops, prepared the
way each PyPI model expects (PP-OCR: RGB scaled to [-1, 1])."""

from __future__ import annotations

import numpy as np

from edgekit.model import samples
from edgekit.model.calibration import Preprocess, split


def text_lines(count: int, seed: int, aspect: int = 4) -> list[np.ndarray]:
    """Crops of skimage's scanned page and text photos shaped like OCR text lines."""
    from skimage import data

    rng = np.random.default_rng(seed)
    out = []
    for img in (data.page(), data.text()):
        for _ in range(count // 2):
            h = int(rng.integers(20, 40))
            w = min(aspect * h, img.shape[1] - 1)
            y = int(rng.integers(0, img.shape[0] - h))
            x = int(rng.integers(0, img.shape[1] - w))
            out.append(np.stack([img[y : y + h, x : x + w]] * 3, axis=-1))
    return out


def ocr(size: tuple[int, int]) -> Preprocess:
    return Preprocess(size=size, mean=(0.5,) * 3, std=(0.5,) * 3)


def vad(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Silero VAD chunks: 512 samples of noise bursts at 16 kHz (no audio ships on PyPI here)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        chunk = rng.standard_normal((1, 512)) * rng.uniform(0.01, 0.3)
        feeds.append({
            "input": chunk.astype(np.float32),
            "state": np.zeros((2, 1, 128), np.float32),
            "sr": np.array(16000, np.int64),
        })
    return feeds


def tokens(count: int, seed: int, seq: int = 64) -> list[dict[str, np.ndarray]]:
    """MiniLM inputs: random WordPiece ids between [CLS] and [SEP], last quarter padded."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        ids = rng.integers(1000, 30000, size=(1, seq)).astype(np.int64)
        mask = np.ones((1, seq), np.int64)
        ids[0, 0], ids[0, -seq // 4 - 1] = 101, 102
        ids[0, -seq // 4 :] = 0
        mask[0, -seq // 4 :] = 0
        feeds.append({"input_ids": ids, "attention_mask": mask,
                      "token_type_ids": np.zeros((1, seq), np.int64)})
    return feeds


def datasets() -> dict[str, tuple[str, list, list, str]]:
    """name -> (sample model, calibration feeds, held-out feeds, data kind)."""
    photos = samples.images()
    det = ocr((320, 320))
    det_feeds = [{"x": det.apply(p)} for p in photos]
    held = [det_feeds[i] for i in (3, 10, 11)]  # rocket, scanned page, text
    calib = [f for i, f in enumerate(det_feeds) if i not in (3, 10, 11)]
    yolo = Preprocess(size=(320, 320))  # NudeNet feeds RGB / 255, no mean or std
    yolo_calib, yolo_held = split([{"images": yolo.apply(p)} for p in photos])
    cls = ocr((48, 192))
    rec = ocr((48, 320))
    return {
        "ppocr-det": ("ppocr-det", calib, held, "images"),
        "ppocr-cls": (
            "ppocr-cls",
            [{"x": cls.apply(c)} for c in text_lines(32, 0)],
            [{"x": cls.apply(c)} for c in text_lines(16, 1)],
            "images",
        ),
        "ppocr-rec": (
            "ppocr-rec",
            [{"x": rec.apply(c)} for c in text_lines(24, 0, aspect=7)],
            [{"x": rec.apply(c)} for c in text_lines(12, 1, aspect=7)],
            "images",
        ),
        "yolov8n": ("yolov8n-320", yolo_calib, yolo_held, "images"),
        "silero-vad": ("silero-vad-16k-op15", vad(16, 0), vad(8, 1), "synthetic"),
        "minilm-l6": ("minilm-l6", tokens(8, 0), tokens(8, 1), "synthetic"),
    }
