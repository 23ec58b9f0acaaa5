"""Compare this run's headline numbers with the committed reference (results/reproduction.md)."""

from equireg import reproduction
from equireg.experiments import setup_job

setup_job(snakemake.log, snakemake.threads)
reproduction.write(snakemake.params.reference, snakemake.params.tables, snakemake.output[0],
                   snakemake.params.spread)
