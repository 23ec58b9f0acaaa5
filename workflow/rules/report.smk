# Aggregation: per-run result files -> tables (CSV, Markdown, LaTeX) -> figures -> claims.md.


rule tables:
    input:
        retina=expand(
            f"{RESULTS}/retina/{{run[0]}}/{{run[1]}}/seed{{seed}}.csv",
            run=retina_runs(),
            seed=SEEDS,
        ),
        shift_sweep=expand(
            f"{RESULTS}/shift_sweep/{{method}}.csv", method=retina_methods()
        ),
        equivariance=expand(
            f"{RESULTS}/equivariance/{{method}}.json", method=retina_methods()
        ),
        lung=expand(
            f"{RESULTS}/lung/{{method}}/seed{{seed}}.csv",
            method=LUNG["methods"],
            seed=SEEDS,
        ),
        toy1d=f"{RESULTS}/toy1d/toy1d.csv",
        landscape=f"{RESULTS}/landscape/landscape.csv",
        curves=learning_curve_files(),
    output:
        [
            (
                report(path, caption="../report/table.rst", category="6 Tables")
                if path.endswith(".csv")
                else path
            )
            for path in all_tables()
        ],
    log:
        f"{RESULTS}/logs/tables.log",
    conda:
        ENV
    params:
        directory=lambda wildcards, output: os.path.dirname(output[0]),
    script:
        "../scripts/tables.py"


rule figure:
    input:
        tables=all_tables(),
        retina_examples=expand(
            f"{RESULTS}/retina/{{method}}/none/seed{SEEDS[0]}_examples.npz",
            method=[m for m, c in retina_runs() if c == "none"],
        ),
        lung_examples=expand(
            f"{RESULTS}/lung/{{method}}/seed{SEEDS[0]}_examples.npz",
            method=LUNG["methods"],
        ),
        train=f"{RESULTS}/data/retina/train_none.npz",
        landscape=f"{RESULTS}/landscape/landscape.csv",
        toy1d=f"{RESULTS}/toy1d/toy1d.csv",
    output:
        png=report(
            f"{RESULTS}/figures/{{name}}.png",
            caption="../report/figure.rst",
            category=lambda wildcards: FIGURE_SECTIONS[wildcards.name],
        ),
        pdf=f"{RESULTS}/figures/{{name}}.pdf",
    log:
        f"{RESULTS}/logs/figures/{{name}}.log",
    wildcard_constraints:
        name="|".join(FIGURES),
    conda:
        ENV
    params:
        tables=tables_directory,
    script:
        "../scripts/figure.py"


rule claims:
    input:
        tables=all_tables(),
    output:
        markdown=report(
            f"{RESULTS}/claims.md", caption="../report/claims.rst", category="0 Claims"
        ),
        csv=f"{RESULTS}/claims.csv",
    log:
        f"{RESULTS}/logs/claims.log",
    conda:
        ENV
    params:
        tables=tables_directory,
        copdgene=config.get("datasets", {}).get("copdgene"),
    script:
        "../scripts/claims.py"


rule summary:
    input:
        claims=rules.claims.output.csv,
        tables=expand(
            f"{RESULTS}/tables/{{name}}.csv",
            name=list(summary.LEADERBOARDS),
        ),
    output:
        f"{RESULTS}/summary.html",
    log:
        f"{RESULTS}/logs/summary.log",
    conda:
        ENV
    params:
        tables=tables_directory,
    script:
        "../scripts/summary.py"


rule reproduction:
    input:
        tables=all_tables(),
        reference=expand("results/reference/tables/{name}.csv", name=REPRODUCED_TABLES),
    output:
        f"{RESULTS}/reproduction.md",
    log:
        f"{RESULTS}/logs/reproduction.log",
    conda:
        ENV
    params:
        tables=tables_directory,
        reference=lambda wildcards, input: os.path.dirname(input.reference[0]),
    script:
        "../scripts/reproduction.py"


# defined only when asked for, so that nothing else can ever overwrite the committed reference
if REFRESH_REFERENCE:

    rule reference:
        input:
            claims=rules.claims.output.markdown,
            tables=all_tables(),
            figures=all_figures(),
        output:
            claims="results/reference/claims.md",
            tables=expand(
                "results/reference/tables/{name}.{ext}",
                name=TABLES,
                ext=["csv", "md", "tex"],
            ),
            figures=expand(
                "results/reference/figures/{name}.{ext}",
                name=FIGURES,
                ext=["png", "pdf"],
            ),
        log:
            f"{RESULTS}/logs/reference.log",
        conda:
            ENV
        script:
            "../scripts/reference.py"
