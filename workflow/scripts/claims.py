"""Check each claim of the paper against the measured tables; write claims.md and claims.csv."""

from equireg import claims
from equireg.experiments import setup_job

setup_job(snakemake.log, snakemake.threads)
claims.write(snakemake.params.tables, snakemake.output.markdown, copdgene=snakemake.params.copdgene,
             csv_path=snakemake.output.csv, brain=snakemake.params.brain)
