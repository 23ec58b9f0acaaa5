# Retina: generated vessel maps (and the real scikit-image fundus), warp-plus-shift pairs,
# training per method x train condition x seed, Dice / folds per test pair.


rule retina_data:
    output:
        pairs=f"{RESULTS}/data/retina/{{split}}_{{condition}}.npz",
    log:
        f"{RESULTS}/logs/retina_data/{{split}}_{{condition}}.log",
    wildcard_constraints:
        split="train|val|test|real",
        condition="none|shift|shift_scale",
    priority: DATA_PRIORITY
    conda:
        ENV
    params:
        retina=RETINA,
        drive=config.get("datasets", {}).get("drive"),
    script:
        "../scripts/retina_data.py"


rule train_retina:
    input:
        train=retina_set("train"),
        val=retina_set("val"),
    output:
        model=f"{RESULTS}/models/retina/{{method}}/{{condition}}/seed{{seed}}.pt",
        curve=f"{RESULTS}/curves/retina/{{method}}/{{condition}}/seed{{seed}}.csv",
    log:
        f"{RESULTS}/logs/train_retina/{{method}}_{{condition}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_retina/{{method}}_{{condition}}_seed{{seed}}.tsv"
    priority: training_priority("retina", method_settings)
    conda:
        ENV
    threads: 1
    resources:
        gpu=1,
    params:
        settings=lambda wc: method_settings(wc.method),
        batch_size=RETINA["batch_size"],
        checkpoints=lambda wc: f"{RESULTS}/checkpoints/retina/{wc.method}/{wc.condition}/seed{wc.seed}",
        run=lambda wc: {
            "experiment": "retina",
            "method": wc.method,
            "train_condition": wc.condition,
            "seed": int(wc.seed),
        },
    script:
        "../scripts/train.py"


rule evaluate_retina:
    input:
        model=retina_model,
        tests=expand(
            rules.retina_data.output.pairs,
            split=["test", "real"] if RETINA["real_test"] else ["test"],
            condition=RETINA["test_conditions"],
        ),
    output:
        table=f"{RESULTS}/retina/{{method}}/{{condition}}/seed{{seed}}.csv",
        examples=f"{RESULTS}/retina/{{method}}/{{condition}}/seed{{seed}}_examples.npz",
        runtime=f"{RESULTS}/benchmarks/evaluate_retina/{{method}}_{{condition}}_seed{{seed}}_per_pair.tsv",
    log:
        f"{RESULTS}/logs/evaluate_retina/{{method}}_{{condition}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_retina/{{method}}_{{condition}}_seed{{seed}}.tsv"
    conda:
        ENV
    threads: 1
    params:
        settings=lambda wc: method_settings(wc.method),
        io=None,
    script:
        "../scripts/evaluate_retina.py"


use rule evaluate_retina as evaluate_retina_io with:
    input:
        model=retina_model,
        tests=expand(
            rules.retina_data.output.pairs,
            split="test",
            condition=IO_RETINA_CONDITIONS,
        ),
    output:
        table=f"{RESULTS}/retina_io/{{method}}/{{condition}}/seed{{seed}}.csv",
        runtime=f"{RESULTS}/benchmarks/evaluate_retina_io/{{method}}_{{condition}}_seed{{seed}}_per_pair.tsv",
    log:
        f"{RESULTS}/logs/evaluate_retina_io/{{method}}_{{condition}}_seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate_retina_io/{{method}}_{{condition}}_seed{{seed}}.tsv"
    params:
        settings=lambda wc: method_settings(wc.method),
        io=io_settings("retina"),
