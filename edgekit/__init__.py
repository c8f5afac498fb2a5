"""edgekit: a thermal-aware ONNX/TFLite inference cluster for Raspberry Pi boards."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgekit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
