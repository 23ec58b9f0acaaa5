"""Aggregate every per-run result file into the tables (CSV, Markdown, LaTeX)."""

from equireg import tables
from equireg.experiments import setup_job

setup_job(snakemake.log, snakemake.threads)
tables.write_all(snakemake.input, snakemake.params.directory)
