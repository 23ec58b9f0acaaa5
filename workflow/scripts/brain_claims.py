"""Check the brain experiment's claims; write brain_claims.md and brain_claims.csv."""

from equireg import claims
from equireg.experiments import setup_job

setup_job(snakemake.log, snakemake.threads)
claims.write_brain(snakemake.params.tables, snakemake.output.markdown, csv_path=snakemake.output.csv)
