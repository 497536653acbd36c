"""latentbench: a reproducible benchmark suite for latent diffusability."""

__version__ = "0.1.0"
