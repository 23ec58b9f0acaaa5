"""The conda environment and pyproject.toml pin the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", requirement.strip()).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = dict(_normalise(r) for r in project["dependencies"])
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    conda_pins = dict(_normalise(r) for r in pip_section if not r.startswith("-"))
    assert conda_pins == pinned


def test_torch_is_pinned_everywhere():
    assert "torch==2.13.0" in (ROOT / "pyproject.toml").read_text()
    assert "torch==2.13.0" in (ROOT / "environment.yml").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert len(commands) >= 2, "README must start with the run command and the test command"
    assert "snakemake --cores all" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
