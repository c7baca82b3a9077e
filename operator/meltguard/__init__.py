"""meltguard: keeps GPU inference fleets from melting."""

__version__ = "0.1.0"
