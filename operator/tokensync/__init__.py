"""tokensync: keeps short-lived OAuth access tokens fresh in Kubernetes Secrets."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tokensync")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

__all__ = ["__version__"]
