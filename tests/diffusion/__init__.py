"""Tests of latentbench.diffusion."""
