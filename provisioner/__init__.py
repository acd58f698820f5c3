"""provisioner: from racked, powered-off servers to a running Cozystack platform."""

__version__ = "0.1.0"
