# Lung: breathing pairs with known deformation and exact TRE in mm, on two real chest CTs
# (lung.data: ct; fetched once, cached on the preset's grid) or on a generated phantom (phantom).


rule lung_ct:
    output:
        f"{RESULTS}/data/lung/chest_ct.npz",
    log:
        f"{RESULTS}/logs/lung_ct.log",
    priority: DATA_PRIORITY
    conda:
        ENV
    params:
        size=LUNG["size"],
        configured=config.get("datasets", {}).get("lung_ct"),
        download=f"{RESULTS}/data/lung/download",
    script:
        "../scripts/lung_ct.py"


rule lung_data:
    input:
        unpack(lung_ct_input),
    output:
        pairs=f"{RESULTS}/data/lung/{{split}}.npz",
    log:
        f"{RESULTS}/logs/lung_data/{{split}}.log",
    wildcard_constraints:
        split="train|val|test",
    priority: DATA_PRIORITY
    conda:
        ENV
    params:
        lung=LUNG,
        copdgene=config.get("datasets", {}).get("copdgene"),
        dirlab4dct=config.get("datasets", {}).get("dirlab4dct"),
        nlst=config.get("datasets", {}).get("nlst"),
    script:
        "../scripts/lung_data.py"


rule train_lung:
    input:
        train=rules.lung_data.output.pairs.format(split="train"),
        val=rules.lung_data.output.pairs.format(split="val"),
    output:
        model=f"{RESULTS}/models/lung/{{method}}/seed{{seed}}.pt",
        curve=f"{RESULTS}/curves/lung/{{method}}/seed{{seed}}.csv",
    log:
        f"{RESULTS}/logs/train_lung/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_lung/{{method}}_seed{{seed}}.tsv"
    priority: training_priority("lung", lambda m: method_settings(m, LUNG))
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
    params:
        settings=lambda wc: method_settings(wc.method, LUNG),
        batch_size=2,
        checkpoints=lambda wc: f"{RESULTS}/checkpoints/lung/{wc.method}/seed{wc.seed}",
        run=lambda wc: {
            "experiment": "lung",
            "method": wc.method,
            "train_condition": "none",
            "seed": int(wc.seed),
        },
    script:
        "../scripts/train.py"


rule evaluate_lung:
    input:
        model=lung_model,
        test=rules.lung_data.output.pairs.format(split="test"),
    output:
        table=f"{RESULTS}/lung/{{method}}/seed{{seed}}.csv",
        examples=f"{RESULTS}/lung/{{method}}/seed{{seed}}_examples.npz",
        runtime=f"{RESULTS}/benchmarks/evaluate_lung/{{method}}_seed{{seed}}_per_pair.tsv",
    log:
        f"{RESULTS}/logs/evaluate_lung/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_lung/{{method}}_seed{{seed}}.tsv"
    conda:
        ENV
    threads: 1
    params:
        settings=lambda wc: method_settings(wc.method, LUNG),
        io=None,
    script:
        "../scripts/evaluate_lung.py"


use rule evaluate_lung as evaluate_lung_io with:
    output:
        table=f"{RESULTS}/lung_io/{{method}}/seed{{seed}}.csv",
        runtime=f"{RESULTS}/benchmarks/evaluate_lung_io/{{method}}_seed{{seed}}_per_pair.tsv",
    log:
        f"{RESULTS}/logs/evaluate_lung_io/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_lung_io/{{method}}_seed{{seed}}.tsv"
    params:
        settings=lambda wc: method_settings(wc.method, LUNG),
        io=io_settings("lung"),
