"""Glue between the CLI (one subcommand per Snakemake rule) and the library packages.

Each module mirrors one rules/*.smk file: it reads the job's inputs, calls the library
and writes the job's outputs atomically. Nothing here knows about Snakemake.
"""
