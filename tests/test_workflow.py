"""The Snakemake workflow: every preset plans, lint and format pass, bad configs fail early, and the
smoke preset runs end to end twice with byte-identical tables."""

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from helpers import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _snakemake(*args, cwd=ROOT, timeout=600):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("preset", ["smoke", "default", "paper"])
def test_every_preset_plans(preset):
    result = _snakemake("-n", "--forceall", "--cores", "2", "--config", f"preset={preset}")
    assert result.returncode == 0, result.stdout + result.stderr
    for job in ("train_retina", "evaluate_retina", "equivariance", "landscape", "toy1d", "evaluate_lung", "claims"):
        assert job in result.stdout
    # real chest CT for the lung experiment, except in CI's smoke preset (nothing to download)
    assert ("rule lung_ct:" in result.stdout) == (preset != "smoke")


def test_brain_runs_with_all_in_smoke_and_paper_and_on_demand_in_default():
    for preset in ("smoke", "paper"):
        plan = _snakemake("-n", "--forceall", "--cores", "2", "--config", f"preset={preset}")
        assert "rule train_brain:" in plan.stdout and "rule evaluate_brain_io:" in plan.stdout, preset
    default = _snakemake("-n", "--forceall", "--cores", "2")
    assert default.returncode == 0 and not re.search(r"^rule \w*brain\w*:", default.stdout, re.M)
    on_demand = _snakemake("-n", "--forceall", "--cores", "2", "brain")
    assert on_demand.returncode == 0, on_demand.stdout + on_demand.stderr
    for job in ("brain_data", "train_brain", "evaluate_brain", "evaluate_brain_io", "brain_tables", "brain_figure"):
        assert f"rule {job}:" in on_demand.stdout
    assert "train_retina" not in on_demand.stdout


def _planned_priorities(stdout):
    """{(rule, wildcards): priority} of the jobs in a dry run's plan."""
    jobs = {}
    for block in re.split(r"\n(?=rule \w+:)", stdout):
        rule = re.match(r"rule (\w+):", block)
        priority = re.search(r"^\s+priority: (\d+)", block, re.M)
        if rule and priority:
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs[rule.group(1), wildcards.group(1) if wildcards else ""] = int(priority.group(1))
    return jobs


def test_default_plan_runs_data_first_then_the_longest_training():
    result = _snakemake("-n", "--forceall", "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = _planned_priorities(result.stdout)
    data = [p for (rule, _), p in jobs.items() if rule.endswith("_data")]
    training = {w: p for (rule, w), p in jobs.items() if rule.startswith("train_")}
    assert len(data) >= 10 and len(training) >= 10
    assert min(data) > max(training.values()) > min(training.values()) > 1
    # 60 3-D CARL steps outweigh 300 3-D VoxelMorph steps; 4500 cheap 2-D VoxelMorph steps rank
    # below 1200 GradICON steps
    assert training["method=carl, seed=0"] > training["method=voxelmorph, seed=0"]
    assert (training["method=gradicon, condition=shift, seed=0"]
            > training["method=voxelmorph, condition=shift, seed=0"])


def test_lint_and_format():
    lint = _snakemake("--lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    files = ["Snakefile", *map(str, sorted((ROOT / "workflow" / "rules").glob("*.smk")))]
    formatting = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *files], cwd=ROOT,
                                capture_output=True, text=True)
    assert formatting.returncode == 0, formatting.stdout + formatting.stderr


@pytest.mark.parametrize("override,message", [
    ("preset=nope", "unknown preset 'nope'"),
    ("presets={'smoke':{'retina':{'pooll':8}}}", "'pooll' was unexpected"),
])
def test_bad_config_fails_before_any_job(override, message):
    result = _snakemake("-n", "--cores", "1", "--config", override)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_landscape_network_must_be_trained_on_not_shifted_pairs(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("presets:\n  smoke:\n    landscape: {method: carl_draft, stride: 8}\n")
    result = _snakemake("-n", "--cores", "1", "--configfile", "config/config.yaml", str(override),
                        "--config", "preset=smoke")
    assert result.returncode != 0
    assert "landscape.method': 'carl_draft' is not a retina method" in result.stdout + result.stderr


@pytest.mark.slow
def test_smoke_preset_runs_end_to_end_and_reproduces(tmp_path):
    outputs = []
    for run in ("first", "second"):
        directory = copy_workflow(tmp_path / run)
        result = _snakemake("--cores", "2", "--config", "preset=smoke", cwd=directory, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        outputs.append(directory / "results" / "smoke")
    first, second = outputs
    assert (first / "claims.md").read_text().count("| ") > 6
    for name in ("retina", "shift_sweep", "equivariance", "lung", "toy1d", "landscape", "learning_curves", "plateau",
                 "brain", "brain_pairs", "brain_curves"):
        for ext in ("csv", "md", "tex"):
            assert (first / "tables" / f"{name}.{ext}").read_bytes() == (second / "tables" / f"{name}.{ext}").read_bytes()
    for figure in ("retina_violin", "learning_curves", "shift_sweep", "landscape", "toy1d", "qualitative_retina", "qualitative_lung",
                   "vessel_masks", "brain_shift"):
        assert (first / "figures" / f"{figure}.png").stat().st_size > 1000
        assert (first / "figures" / f"{figure}.pdf").exists()
    assert (first / "claims.md").read_bytes() == (second / "claims.md").read_bytes()
    assert (first / "tables" / "brain_labels.csv").read_bytes() == (second / "tables" / "brain_labels.csv").read_bytes()
    # runtime per pair goes to the benchmark files, never into the (byte-compared) result tables
    runtime = pd.read_csv(first / "benchmarks" / "evaluate_retina" / "carl_none_seed0_per_pair.tsv", sep="\t")
    assert set(runtime.test_condition) == {"none", "shift", "shift_scale"} and (runtime.seconds_per_pair > 0).all()
    assert "seconds_per_pair" not in (first / "tables" / "retina.csv").read_text()
    report = _snakemake("--report", "report.html", "--config", "preset=smoke", cwd=tmp_path / "first")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "first" / "report.html").read_text()
    assert "claims.md" in html and "retina_violin.png" in html and "retina.csv" in html
    assert "Capture radius" in html  # the figure's own caption
    # the landing page: the suite's description with the claims and leaderboards as HTML tables
    landing = _landing_tables(html)
    claims_table = landing["equireg-claims"]
    # the paper's claims, then the brain's four (smoke runs the brain experiment with everything)
    assert claims_table[0] == ["claim", "text", "criterion", "measured", "result"] and len(claims_table) == 1 + 14
    assert claims_table[-1][1].startswith("Brain")
    assert {row[-1] for row in claims_table[1:]} <= {"PASS", "FAIL"}
    board = landing["equireg-leaderboard_retina"]
    # methods by the names the README and the figures use; the leaderboard CSVs keep the method ids
    assert board[1][0] == "unregistered" and {"CARL", "GradICON", "classical (SimpleITK)"} <= {row[0] for row in board[1:]}
    assert {"CARL (IO)", "GradICON (IO)"} <= {row[0] for row in board[1:]}  # the evaluation variant's rows
    assert "| CARL |" in (first / "tables" / "leaderboard_retina.md").read_text()
    assert "\ncarl," in (first / "tables" / "leaderboard_retina.csv").read_text()
    assert "equireg-leaderboard_lung" in landing
    sections = re.search(r"var categories = (\{.*?\});", html).group(1)
    assert sections.index('"1 Retina"') < sections.index('"4 Lung"') < sections.index('"5 Training"')


def _landing_tables(report: str) -> dict[str, list[list[str]]]:
    """The tables of the report's landing page (the workflow description, a JSON string in the
    page's script), by CSS class: header and body rows as lists of cell texts."""
    description = json.loads(re.search(r'var workflow_desc = ("(?:[^"\\]|\\.)*");', report).group(1))

    class Tables(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.current, self.row, self.cell = {}, None, None, None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                name = next(c for c in dict(attrs)["class"].split() if c.startswith("equireg-"))
                self.current = self.tables.setdefault(name, [])
            elif tag == "tr" and self.current is not None:
                self.row = []
                self.current.append(self.row)
            elif tag in ("td", "th") and self.row is not None:
                self.cell = []

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cell is not None:
                self.row.append("".join(self.cell).strip())
                self.cell = None
            elif tag == "table":
                self.current = self.row = None

    parser = Tables()
    parser.feed(description)
    return parser.tables
