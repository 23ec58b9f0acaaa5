# Preset resolution and the lists of targets. Everything a rule needs comes from PRESET_CONFIG.
import os

from snakemake.exceptions import WorkflowError

from equireg import figures, methods, reproduction, summary, tables
from equireg.carl import XI_POOLING

PRESET = config["preset"]
if PRESET not in config["presets"]:
    raise WorkflowError(
        f"config key 'preset': unknown preset {PRESET!r}; "
        f"known: {', '.join(sorted(config['presets']))}"
    )
PRESET_CONFIG = config["presets"][PRESET]
for key, path in config.get("datasets", {}).items():
    # lung_ct may also name the sdist archive itself
    archive = key == "lung_ct" and os.path.isfile(path or "")
    if path and not (os.path.isdir(path) or archive):
        raise WorkflowError(f"config key 'datasets.{key}': {path!r} is not a directory")
RESULTS = f"results/{PRESET}"
RETINA = PRESET_CONFIG["retina"]
LUNG = PRESET_CONFIG["lung"]
BRAIN = PRESET_CONFIG["brain"]
SEEDS = PRESET_CONFIG["seeds"]
# where and in which precision networks train and run (equireg.devices), and a cap on every
# training stage's steps (e.g. max_steps=2 checks a preset end to end at its real sizes)
COMPUTE = {"device": config["device"], "precision": config["precision"]}
MAX_STEPS = config["max_steps"]
# results/reference/ is the default preset's committed copy: a run compares itself with it
# (reproduction.md) and overwrites it only when asked to (--config refresh_reference=true)
REFERENCE_PRESET = "default"
REFRESH_ASKED = str(config["refresh_reference"]).lower() == "true"
REFRESH_REFERENCE = PRESET == REFERENCE_PRESET and REFRESH_ASKED
if REFRESH_ASKED and not REFRESH_REFERENCE:
    raise WorkflowError(
        f"config key 'refresh_reference': results/reference/ holds the {REFERENCE_PRESET!r} "
        f"preset; preset {PRESET!r} cannot refresh it"
    )
ENV = "../envs/equireg.yaml"
# every method list comes from the one registry: built-ins and installed plugins
REGISTERED = methods.registry()
TRAINED = set(methods.trained())
for key, named in (
    ("retina.methods", RETINA["methods"]),
    ("retina.ablations", RETINA["ablations"]),
    ("lung.methods", LUNG["methods"]),
    ("landscape.method", [PRESET_CONFIG["landscape"]["method"]]),
    ("training", list(PRESET_CONFIG["training"])),
    ("lung.training", list(LUNG.get("training", {}))),
    ("brain.methods", BRAIN["methods"]),
    ("brain.training", list(BRAIN.get("training", {}))),
):
    unknown = [m for m in named if m not in REGISTERED]
    if unknown:
        raise WorkflowError(
            f"config key 'presets.{PRESET}.{key}': {', '.join(map(repr, unknown))} is not a "
            f"registered method; registered: {', '.join(sorted(REGISTERED))} (add your own "
            "through the entry-point group equireg.methods, see README)"
        )


# Job order (no result depends on it). Data sets come first: every training job waits for its
# train and validation sets, and in one default run a validation set generated late held three
# shifted-pair trainings back until the last GradICON ran alone for eight minutes. Training jobs
# come next, longest first, so that the short evaluations fill both cores at the end.
DATA_PRIORITY = 1_000_000
# Rough seconds per training step on one CPU core at the default preset's sizes (its per-rule
# benchmarks, bf16 where used); for ordering only. A method not listed (a plugin) counts 1 s.
STEP_SECONDS = {
    "retina": {
        "carl": 1.05,
        "transformer_only": 0.5,
        "gradicon": 0.65,
        "voxelmorph": 0.06,
        "unet_only": 0.1,
    },
    "lung": {"carl": 3.7, "gradicon": 1.5, "voxelmorph": 0.7},
    # 36x43x48 brain canvas (5.25 mm, padded for 63 mm shifts; 37x45x49 since), batch 2, on a loaded machine
    "brain": {"carl": 8.2, "gradicon": 4.4, "voxelmorph": 2.4},
}


def training_priority(experiment, settings):
    """Priority of a training job: 1 + its estimated seconds (below DATA_PRIORITY)."""

    def priority(wildcards):
        step = STEP_SECONDS[experiment].get(wildcards.method, 1.0)
        steps = sum(s["steps"] for s in settings(wildcards.method)["stages"])
        return 1 + min(int(step * steps), DATA_PRIORITY - 2)

    return priority


def method_settings(method, section=None):
    """Builder options and training stages of a method (lung may override retina's)."""
    table = (section or {}).get("training", PRESET_CONFIG["training"])
    settings = table.get(method, {})
    if method in TRAINED and not settings.get("stages"):
        raise WorkflowError(
            f"config: preset {PRESET!r} has no training stages for {method!r}"
        )
    stages = settings.get("stages", [])
    if MAX_STEPS is not None:
        stages = [
            {**stage, "steps": min(stage["steps"], MAX_STEPS)} for stage in stages
        ]
    return {
        "options": settings.get("options", {}),
        "stages": stages,
        "compute": COMPUTE,
    }


def retina_runs():
    """(method, train condition) pairs trained and evaluated on retina."""
    # methods without training do not depend on a train condition: evaluated once, as "none"
    runs = [
        (m, c if m in TRAINED else "none")
        for m in RETINA["methods"]
        for c in RETINA["train_conditions"]
    ]
    runs += [
        (m, c) for m in RETINA["ablations"] for c in RETINA["ablation_train_conditions"]
    ]
    return list(dict.fromkeys(runs))


def retina_model(wildcards):
    """The model a retina evaluation needs ([] for methods that do not train)."""
    if wildcards.method not in TRAINED:
        return []
    return rules.train_retina.output.model.format(**dict(wildcards.items()))


def lung_ct_input(wildcards):
    """The chest CT cache when the preset's lung data is real CT; nothing for the phantom."""
    return {"chest_ct": rules.lung_ct.output[0]} if LUNG.get("data") == "ct" else {}


def lung_model(wildcards):
    if wildcards.method not in TRAINED:
        return []
    return rules.train_lung.output.model.format(**dict(wildcards.items()))


def lung_ct_input(wildcards):
    """The chest CT cache when the preset's lung data is real CT; nothing for the phantom."""
    return {"chest_ct": rules.lung_ct.output[0]} if LUNG.get("data") == "ct" else {}


def brain_model(wildcards):
    if wildcards.method not in TRAINED:
        return []
    return rules.train_brain.output.model.format(**dict(wildcards.items()))


def not_shifted_model(method):
    """The retina model of ``method`` trained on not-shifted pairs, first seed."""
    return rules.train_retina.output.model.format(
        method=method, condition="none", seed=SEEDS[0]
    )


def sweep_model(wildcards):
    """Shift sweeps and equivariance use the models trained on not-shifted pairs, first seed."""
    if wildcards.method not in TRAINED:
        return []
    return not_shifted_model(wildcards.method)


# the evaluation variant "method (IO)" of each experiment: which methods, on how many pairs
IO = PRESET_CONFIG["instance_optimization"]
# the retina leaderboard's IO rows: models trained on not-shifted pairs, tested not shifted and shifted
IO_RETINA_CONDITIONS = [c for c in ("none", "shift") if c in RETINA["test_conditions"]]
for experiment, allowed in (
    ("retina", [m for m, c in retina_runs() if c == "none"]),
    ("shift_sweep", [m for m, c in retina_runs() if c == "none"]),
    ("lung", LUNG["methods"]),
    ("brain", BRAIN["methods"]),
):
    wrong = [
        m
        for m in IO.get(experiment, {}).get("methods", [])
        if m not in TRAINED or m not in allowed
    ]
    if wrong:
        raise WorkflowError(
            f"config key 'presets.{PRESET}.instance_optimization.{experiment}.methods': "
            f"{', '.join(map(repr, wrong))} is not a method of that experiment trained on "
            "not-shifted pairs (instance optimisation fine-tunes a trained network)"
        )


def io_settings(experiment):
    """Steps, learning rate and pairs of one experiment's "method (IO)" evaluations."""
    return {"steps": IO["steps"], "lr": IO["lr"], "pairs": IO[experiment]["pairs"]}


# the brain's "method (IO)" evaluations (a preset may give the brain none)
BRAIN_IO_METHODS = IO.get("brain", {}).get("methods", [])


LANDSCAPE = PRESET_CONFIG["landscape"]
if (LANDSCAPE["method"], "none") not in retina_runs():
    raise WorkflowError(
        f"config key 'presets.{PRESET}.landscape.method': {LANDSCAPE['method']!r} is not "
        "a retina method or ablation trained on the 'none' condition"
    )


def learning_curve_files():
    """The validation curve of every training run, retina and lung."""
    retina = [
        rules.train_retina.output.curve.format(method=m, condition=c, seed=s)
        for m, c in retina_runs()
        if m in TRAINED
        for s in SEEDS
    ]
    lung = [
        rules.train_lung.output.curve.format(method=m, seed=s)
        for m in LUNG["methods"]
        if m in TRAINED
        for s in SEEDS
    ]
    return retina + lung


def brain_curve_files():
    """The validation curve of every brain training run."""
    return [
        rules.train_brain.output.curve.format(method=m, seed=s)
        for m in BRAIN["methods"]
        if m in TRAINED
        for s in SEEDS
    ]


def brain_tables():
    """The brain experiment's tables (equireg.tables.BRAIN_NAMES, and the per-label CSV)."""
    return expand(TABLE, name=tables.BRAIN_NAMES, ext=["csv", "md", "tex"]) + [
        TABLE.format(name="brain_labels", ext="csv")
    ]


def brain_figures(pattern):
    """The brain experiment's figures (equireg.figures.BRAIN_SECTIONS), PNG and PDF, on ``pattern``
    (FIGURE, or REFERENCE_FIGURE)."""
    return expand(pattern, name=list(figures.BRAIN_SECTIONS), ext=["png", "pdf"])


def brain_in_all():
    """The brain experiment's outputs when the preset runs it with everything (brain.in_all)."""
    return rules.brain.input if BRAIN["in_all"] else []


def landing_leaderboards():
    """The leaderboards of the report's landing page (equireg.summary): the brain's only where the
    preset runs the brain with everything."""
    return [
        name
        for name in summary.LEADERBOARDS
        if name in tables.NAMES or (BRAIN["in_all"] and name in tables.BRAIN_NAMES)
    ]


def retina_methods():
    return list(dict.fromkeys(RETINA["methods"] + RETINA["ablations"]))


def retina_set(split, condition="{condition}"):
    """One retina pair set of rule retina_data (its pattern when ``condition`` is left open)."""
    return rules.retina_data.output.pairs.format(split=split, condition=condition)


# the library names its tables (equireg.tables, the leaderboards first: the report's landing
# page shows them), the tables reproduction.md compares (equireg.reproduction) and every figure
# with its section of the report (equireg.figures)
FIGURES = list(figures.SECTIONS)
TABLE = f"{RESULTS}/tables/{{name}}.{{ext}}"
FIGURE = f"{RESULTS}/figures/{{name}}.{{ext}}"
REFERENCE_TABLE = "results/reference/tables/{name}.{ext}"
REFERENCE_FIGURE = "results/reference/figures/{name}.{ext}"


def all_tables():
    return expand(TABLE, name=tables.NAMES, ext=["csv", "md", "tex"])


def all_figures():
    return expand(FIGURE, name=FIGURES, ext=["png", "pdf"])


def tables_directory(wildcards, input):
    return os.path.dirname(input.tables[0])


def reference_outputs():
    """The target of the default run regarding results/reference/ (a refresh, or the comparison)."""
    if REFRESH_REFERENCE:
        return ["results/reference/claims.md"]
    if PRESET == REFERENCE_PRESET:
        return [f"{RESULTS}/reproduction.md"]
    return []
