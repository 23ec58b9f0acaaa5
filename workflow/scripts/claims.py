"""Check each claim of the paper against the measured tables; write claims.md."""

from equireg import claims
from equireg.experiments import setup_job

setup_job(snakemake.log, snakemake.threads)
claims.write(snakemake.params.tables, snakemake.output[0], copdgene=snakemake.params.copdgene)
