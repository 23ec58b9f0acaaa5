"""Aggregate the brain evaluations and learning curves into the brain tables."""

from equireg import tables
from equireg.experiments import setup_job

setup_job(snakemake.log, snakemake.threads)
tables.write_brain(snakemake.input, snakemake.params.directory)
