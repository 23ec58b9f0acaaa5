"""Wall time per Snakemake rule, from the benchmark TSVs a workflow run leaves behind.

``python benchmarks/workflow_times.py [--preset default] [--results results]`` reads every
``results/<preset>/benchmarks/**/*.tsv`` (Snakemake's ``benchmark:`` files; the rule is the
sub-directory, or the file's stem for a file at the top) and prints, per rule, the number of
jobs, their summed and largest wall time (``s``), summed CPU time and the largest peak RSS.
Jobs run in parallel under ``--cores all``, so the sum over rules exceeds the elapsed time.
The evaluation rules' ``*_per_pair.tsv`` files (seconds per registered pair, median over each
test set) are listed under ``seconds_per_pair``, per method.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def rule_of(tsv: Path, root: Path) -> str:
    relative = tsv.relative_to(root)
    return relative.parts[0] if len(relative.parts) > 1 else tsv.stem


def read_rows(tsv: Path) -> list[dict[str, str]]:
    with tsv.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if rows and "s" not in rows[0]:
        raise ValueError(f"{tsv}: not a Snakemake benchmark file (no 's' column)")
    return rows


def number(row: dict[str, str], column: str) -> float:
    """A numeric column; Snakemake writes "NA" where it could not measure."""
    value = row.get(column, "NA")
    try:
        return float(value)
    except ValueError:
        return 0.0


PER_PAIR = "_per_pair.tsv"


def per_pair(root: Path) -> dict[str, dict[str, float]]:
    """Largest median seconds per pair of each method over its test sets, per evaluation rule."""
    times: dict[str, dict[str, float]] = {}
    for tsv in sorted(root.rglob(f"*{PER_PAIR}")):
        with tsv.open(newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                rule = times.setdefault(rule_of(tsv, root), {})
                rule[row["method"]] = round(max(rule.get(row["method"], 0.0), number(row, "seconds_per_pair")), 4)
    return times


def summarize(root: Path) -> dict:
    """Per-rule totals over every benchmark TSV under ``root``."""
    rules: dict[str, dict] = {}
    for tsv in sorted(root.rglob("*.tsv")):
        if tsv.name.endswith(PER_PAIR):
            continue
        entry = rules.setdefault(rule_of(tsv, root), {"jobs": 0, "wall_s": 0.0, "max_job_wall_s": 0.0,
                                                      "cpu_s": 0.0, "max_rss_mib": 0.0})
        for row in read_rows(tsv):  # one row per run (`repeat(...)` writes several)
            entry["jobs"] += 1
            entry["wall_s"] += number(row, "s")
            entry["max_job_wall_s"] = max(entry["max_job_wall_s"], number(row, "s"))
            entry["cpu_s"] += number(row, "cpu_time")
            entry["max_rss_mib"] = max(entry["max_rss_mib"], number(row, "max_rss"))
    for entry in rules.values():
        for key in ("wall_s", "max_job_wall_s", "cpu_s", "max_rss_mib"):
            entry[key] = round(entry[key], 1)
    ordered = dict(sorted(rules.items(), key=lambda item: -item[1]["wall_s"]))
    return {"rules": ordered, "total_wall_s": round(sum(e["wall_s"] for e in rules.values()), 1),
            "total_cpu_s": round(sum(e["cpu_s"] for e in rules.values()), 1), "seconds_per_pair": per_pair(root)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent.parent / "results")
    args = parser.parse_args()
    root = args.results / args.preset / "benchmarks"
    if not root.is_dir():
        parser.error(f"--preset {args.preset}: no benchmark directory {root} (run the workflow first)")
    print(json.dumps({"benchmark": "workflow_times", "preset": args.preset, "directory": str(root),
                      **summarize(root)}, indent=2))


if __name__ == "__main__":
    main()
