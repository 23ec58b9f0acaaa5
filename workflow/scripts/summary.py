"""The report's landing page tables: claims and leaderboards as an HTML fragment."""

from equireg import summary
from equireg.experiments import setup_job

setup_job(snakemake.log, snakemake.threads)
summary.write(snakemake.input.claims, snakemake.input.tables, snakemake.output[0])
