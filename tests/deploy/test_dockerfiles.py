"""The Dockerfiles: lint-clean, installing the project the way the README and CI do
with every version pinned, non-root, with a healthcheck on /ready."""

from __future__ import annotations

import http.server
import importlib.metadata
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
SERVICE, TRAIN = DOCKER / "Dockerfile", DOCKER / "Dockerfile.train"
CONSTRAINTS = DOCKER / "constraints.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
needs_hadolint = pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install -e '.[dev]')")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(s for s in path.read_text().splitlines() if not s.lstrip().startswith("#")))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", text, re.MULTILINE)]


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for name, args in instructions(path):
        if name == "FROM":
            current = args.split(" AS ")[-1].strip() if " AS " in args else f"stage{len(out)}"
            out[current] = []
        if current:
            out[current].append((name, args))
    return out


def pins() -> dict[str, str]:
    lines = [s.split("#")[0].strip() for s in CONSTRAINTS.read_text().splitlines()]
    out = {}
    for line in filter(None, lines):
        name, _, version = line.partition("==")
        assert version, f"not an exact pin: {line}"
        out[canonicalize_name(name)] = version
    return out


def pip_installs(path: Path) -> list[list[str]]:
    commands = []
    for name, args in instructions(path):
        if name == "RUN":
            for command in re.split(r"&&|;", args):
                words = command.split()
                if words[:2] == ["pip", "install"]:
                    commands.append([w.strip("'\"") for w in words[2:]])
    return commands


@needs_hadolint
@pytest.mark.parametrize("path", [SERVICE, TRAIN], ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, "--no-color", "--config", str(DOCKER / "hadolint.yaml"), str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_hadolint
def test_hadolint_finds_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN pip install requests\nRUN cd /tmp\n")
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, "--no-color", "--config", str(DOCKER / "hadolint.yaml"), str(bad)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "DL3006" in result.stdout and "DL3013" in result.stdout


def test_project_installed_as_readme_and_ci_do_with_the_pins() -> None:
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    documented = re.findall(r"pip install -e '?\.(?:\[([\w,]+)\])?'?", readme + ci)
    assert documented, "the README's install commands changed: update this test and the Dockerfiles"
    known_extras = {e for group in documented for e in group.split(",") if e}
    project_installs = []
    for path in (SERVICE, TRAIN):
        for words in pip_installs(path):
            targets = [w for w in words if re.fullmatch(r"\.(\[[\w,]+\])?", w)]
            if not targets:
                continue
            project_installs.append((path.name, targets[0]))
            assert words[words.index("-c") + 1] == "docker/constraints.txt", (path.name, words)
            extras = set(re.findall(r"\w+", targets[0]))
            assert extras <= known_extras, f"{path.name} installs extras the README/CI never test: {extras}"
    assert sorted(project_installs) == [("Dockerfile", "."), ("Dockerfile.train", ".[train]")]


def test_every_pip_install_is_pinned_by_constraints() -> None:
    pinned = pins()
    for path in (SERVICE, TRAIN):
        for words in pip_installs(path):
            for word in words:
                if word.startswith("-") or word.startswith(".") or word == "docker/constraints.txt":
                    continue
                if "==" in word:  # an explicit pin, e.g. torch from the CUDA index
                    continue
                if word.startswith("http") or word.startswith("$"):
                    continue
                assert canonicalize_name(word) in pinned, f"{path.name}: {word} is not pinned"


def test_constraints_satisfy_pyproject() -> None:
    pinned = pins()
    requirements = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["train"]
    for spec in map(Requirement, requirements):
        name = canonicalize_name(spec.name)
        assert name in pinned, f"{spec.name} is not pinned in {CONSTRAINTS.name}"
        assert spec.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} violates {spec}"


def test_constraints_are_what_the_tests_run_against() -> None:
    """What CI tests is what the image installs: every pinned package installed here has the pinned version."""
    drift = {}
    for name, version in pins().items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue  # GPU and CUDA packages
        if installed.public != Version(version).public:
            drift[name] = f"pinned {version}, tested {installed}"
    assert not drift, f"update docker/constraints.txt: {drift}"


def test_training_image_torch_is_the_projects_torch() -> None:
    train_pin = next(r for r in PYPROJECT["project"]["optional-dependencies"]["train"] if r.startswith("torch"))
    version = Requirement(train_pin).specifier
    arg = re.search(r"ARG TORCH_VERSION=(\S+)", TRAIN.read_text())
    assert arg and version.contains(arg[1]) and str(version) == f"=={arg[1]}"
    assert pins()["torch"] == arg[1]
    assert re.search(r"ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cu12\d\b", TRAIN.read_text())
    assert "torchrun" in dict(stages(TRAIN)["stage0"])["ENTRYPOINT"]


def test_gpu_target_is_cuda12_cudnn9_with_gpu_wheels() -> None:
    text = SERVICE.read_text()
    assert re.search(
        r"ARG CUDA_RUNTIME=nvidia/cuda:12\.[\d.]+-cudnn-runtime-", text
    )  # cuDNN 9 is in every CUDA 12.4+ cudnn image
    froms = {name: dict(body)["FROM"] for name, body in stages(SERVICE).items()}
    assert froms["gpu"].startswith("${CUDA_RUNTIME}") and list(froms)[-1] == "gpu", "gpu is the default target"
    gpu_venv = " ".join(a for n, a in stages(SERVICE)["venv-gpu"] if n == "RUN")
    assert "onnxruntime-gpu" in gpu_venv and "faiss-gpu-cu12" in gpu_venv
    assert "uninstall -y onnxruntime faiss-cpu" in gpu_venv
    pinned = pins()
    assert Version(pinned["onnxruntime-gpu"]) < Version("1.27"), "onnxruntime-gpu 1.27+ on PyPI is built for CUDA 13"


@pytest.mark.parametrize(("path", "stage"), [(SERVICE, "cpu"), (SERVICE, "gpu"), (TRAIN, "stage0")])
def test_final_stages_run_as_non_root(path: Path, stage: str) -> None:
    users = [a for n, a in stages(path)[stage] if n == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("stage", ["cpu", "gpu"])
def test_service_stages_have_a_healthcheck_and_serve(stage: str) -> None:
    body = dict(stages(SERVICE)[stage])
    assert "faceid-healthcheck" in body["HEALTHCHECK"]
    assert body["ENTRYPOINT"] == '["faceid"]' and body["CMD"] == '["serve"]'
    assert "FACEID_HOST=0.0.0.0" in body["ENV"]


def test_build_context_holds_what_the_dockerfiles_copy() -> None:
    patterns = [
        s.strip() for s in (ROOT / ".dockerignore").read_text().splitlines() if s.strip() and not s.startswith("#")
    ]
    assert patterns[0] == "*", "the context is an allow-list"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for path in (SERVICE, TRAIN):
        for name, args in instructions(path):
            if name == "COPY" and "--from" not in args:
                sources = [w for w in args.split() if not w.startswith("--")][:-1]
                for source in sources:
                    assert (ROOT / source).exists(), source
                    assert any(source == a or source.startswith(a + "/") for a in allowed), (
                        f"{source} is not in the context"
                    )


class _Ready(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/ready" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ready_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_healthcheck_script(ready_server: http.server.HTTPServer, status: int, code: int) -> None:
    _Ready.status = status
    env = {"FACEID_PORT": str(ready_server.server_address[1])}
    result = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py")], env=env, capture_output=True, timeout=30)
    assert result.returncode == code, result.stderr
