"""Every image's pinned set resolves from PyPI as binary wheels for that image's Python and
platform, and every package it installs is pinned in docker/constraints.txt.

No image is built here, so this is what stands between a version bump and an image that
cannot be built (a torch with no build for the chosen CUDA, a wheel with no build for the
image's Python). pip resolves with `--dry-run --report`: it reads each wheel's metadata
file (PEP 658) instead of the wheel, so the CUDA wheels (gigabytes) are not downloaded.
The pip that ships with Python 3.11 predates that for PyPI's current index, so a recent
pip is installed into a throwaway virtual environment first. Needs PyPI (CI has it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "docker" / "constraints.txt"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIP = "pip==26.3"  # the resolver that reads PEP 658 metadata from PyPI's JSON index

# Ubuntu 24.04 (every image's base): Python 3.12, glibc 2.39, x86_64.
PYTHON, GLIBC_MINOR = "3.12", 39
IMAGES = {  # image -> the extras it installs (docker/Dockerfile targets, docker/Dockerfile.train)
    "faceid:cpu": ["cpu"],
    "faceid:gpu": ["gpu"],
    "faceid-train": ["train"],
}

pytestmark = pytest.mark.slow


def requirements(extras: list[str]) -> list[str]:
    """The project's requirements with these extras, its own extras (faceid[cpu]) expanded."""
    out, todo, seen = list(PROJECT["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for spec in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(spec)
            if canonicalize_name(requirement.name) == PROJECT["name"]:
                todo += sorted(requirement.extras)
            else:
                out.append(spec)
    return out


def pins() -> dict[str, str]:
    lines = [s.split("#")[0].strip() for s in CONSTRAINTS.read_text().splitlines()]
    return {canonicalize_name(n): v for n, _, v in (line.partition("==") for line in lines if line)}


def platforms() -> list[str]:
    """--platform for every manylinux tag glibc 2.39 accepts (pip takes the list as given)."""
    tags = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 16, -1)]
    tags += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    return [a for tag in tags for a in ("--platform", tag)]


@pytest.fixture(scope="module")
def pip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("pip")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", PIP],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, f"cannot install {PIP} from PyPI: {installed.stderr[-2000:]}"
    return venv / "bin" / "pip"


@pytest.mark.parametrize("image", IMAGES)
def test_pins_resolve_as_wheels_for_the_image(image: str, pip: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    command = [
        str(pip),
        "install",
        "--dry-run",
        "--ignore-installed",
        "--only-binary=:all:",
        "--python-version",
        PYTHON,
        *platforms(),
        "--target",
        str(tmp_path / "target"),
        "--report",
        str(report),
        "--disable-pip-version-check",
        "-c",
        str(CONSTRAINTS),
        *requirements(IMAGES[image]),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{image}: {result.stderr[-3000:]}"

    pinned = pins()
    installed = {
        canonicalize_name(item["metadata"]["name"]): (item["metadata"]["version"], item["download_info"]["url"])
        for item in json.loads(report.read_text())["install"]
    }
    unpinned = {name: version for name, (version, _) in installed.items() if pinned.get(name) != version}
    assert not unpinned, f"{image} installs versions docker/constraints.txt does not pin: {unpinned}"
    sources = {name: url for name, (_, url) in installed.items() if not url.endswith(".whl")}
    assert not sources, f"{image} would build from source: {sources}"
    expected = {
        "faceid:cpu": {"onnxruntime", "faiss-cpu"},
        "faceid:gpu": {"onnxruntime-gpu", "faiss-gpu-cu12", "nvidia-cublas-cu12"},
        "faceid-train": {"torch", "onnxruntime", "nvidia-cudnn-cu13", "nvidia-nccl-cu13"},
    }[image]
    assert expected <= set(installed), expected - set(installed)
    if image == "faceid:gpu":  # never both builds of the same modules
        assert not {"onnxruntime", "faiss-cpu"} & set(installed)
