"""labelprob server: zero-shot classification from label log-probabilities over gRPC."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("labelprob")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
