"""Glue between the CLI (one subcommand per Snakemake rule) and the library packages.

Each function here is one job: it reads the job's inputs, calls the library and writes the job's
outputs atomically; its typed signature is the subcommand's interface (latentbench.cli). Modules
group jobs by what they touch (data, tokenizers, latents, metrics, latent_metrics, baselines,
diffusion, weights, report); no stage imports another. Nothing here knows about Snakemake.
"""
