"""edgekit: a thermal-aware ONNX/TFLite inference cluster for Raspberry Pi boards."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgekit")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

__all__ = ["Client", "__version__"]


def __getattr__(name: str):  # lazy: `import edgekit` stays light
    if name == "Client":
        from edgekit.client import Client

        return Client
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
