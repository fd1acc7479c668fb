"""gapscope: spectral analysis of signal propagation in attention layers."""

__version__ = "0.1.0"
