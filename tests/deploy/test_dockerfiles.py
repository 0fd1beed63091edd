"""The Dockerfiles: lint-clean, installing the project the way the README and CI do
with every version pinned and `pip check` passing, non-root, with a healthcheck on /ready,
and entry points that work without a GPU. (tests/deploy/test_pins_resolve.py checks that
the pins resolve as wheels for each image's Python and platform.)"""

from __future__ import annotations

import http.server
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
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
VENV_BIN = Path(sys.executable).parent
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
    assert sorted(project_installs) == [
        ("Dockerfile", ".[cpu]"),
        ("Dockerfile", ".[gpu]"),
        ("Dockerfile.train", ".[train]"),
    ]


@pytest.mark.parametrize("path", [SERVICE, TRAIN], ids=lambda p: p.name)
def test_every_project_install_is_checked(path: Path) -> None:
    """`pip check` after each install: the GPU packages are a real extra, not a swap that leaves
    the project's requirements unmet; nothing is uninstalled afterwards."""
    for name, args in instructions(path):
        if name == "RUN" and re.search(r"pip install .*-c docker/constraints\.txt", args):
            assert "pip check" in args, args
        assert "pip uninstall" not in args


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
    extras = PYPROJECT["project"]["optional-dependencies"]
    requirements = PYPROJECT["project"]["dependencies"] + extras["cpu"] + extras["gpu"] + extras["train"]
    for spec in map(Requirement, requirements):
        name = canonicalize_name(spec.name)
        if name == PYPROJECT["project"]["name"]:  # faceid[cpu]: an extra of this project
            continue
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
    # PyPI's torch 2.13.0 is the CUDA 13.0 build, whose CUDA libraries are pinned with it; no
    # second index (the PyTorch index has no CUDA 12.8 build of 2.13, and CI cannot reach it).
    assert "--index-url" not in TRAIN.read_text() and "--extra-index-url" not in TRAIN.read_text()
    pinned = pins()
    assert pinned["cuda-toolkit"].startswith("13.0.") and pinned["nvidia-cudnn-cu13"].startswith("9.")
    assert dict(stages(TRAIN)["stage0"])["ENTRYPOINT"] == '["faceid-train-entrypoint"]'


def test_gpu_target_is_cuda12_6_cudnn9_with_the_gpu_extra() -> None:
    cuda = re.search(r"ARG CUDA_RUNTIME=nvidia/cuda:(12\.\d+)\.\d+-cudnn-runtime-ubuntu24\.04\n", SERVICE.read_text())
    assert cuda, "CUDA 12 with cuDNN (9 in every 12.4+ cudnn image) on the Ubuntu release the venv is built on"
    froms = {name: dict(body)["FROM"] for name, body in stages(SERVICE).items()}
    assert froms["gpu"].startswith("${CUDA_RUNTIME}") and list(froms)[-1] == "gpu", "gpu is the default target"
    assert re.search(r"ARG UBUNTU=ubuntu:24\.04\n", SERVICE.read_text())
    gpu_venv = " ".join(a for n, a in stages(SERVICE)["venv-gpu"] if n == "RUN")
    assert "'.[gpu]'" in gpu_venv and "CUDAExecutionProvider" in gpu_venv
    gpu_extra = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["gpu"]}
    assert gpu_extra == {"onnxruntime-gpu", "faiss-gpu-cu12"}
    pinned = pins()
    assert Version(pinned["onnxruntime-gpu"]) < Version("1.27"), "onnxruntime-gpu 1.27+ on PyPI is built for CUDA 13"
    # The CUDA wheels faiss-gpu-cu12 loads are the base image's CUDA minor version.
    for wheel in ("nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"):
        assert pinned[wheel].startswith(cuda[1] + "."), (wheel, pinned[wheel], cuda[1])


@pytest.mark.parametrize(("path", "stage"), [(SERVICE, "cpu"), (SERVICE, "gpu"), (TRAIN, "stage0")])
def test_final_stages_run_as_non_root(path: Path, stage: str) -> None:
    users = [a for n, a in stages(path)[stage] if n == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("stage", ["cpu", "gpu"])
def test_service_stages_have_a_healthcheck_and_serve(stage: str) -> None:
    body = dict(stages(SERVICE)[stage])
    assert "faceid-healthcheck" in body["HEALTHCHECK"]
    assert body["ENTRYPOINT"] == '["faceid-entrypoint"]' and body["CMD"] == '["serve"]'
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


def run_entrypoint(
    script: str, args: list[str], cwd: Path, env: dict[str, str] | None = None, path: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(DOCKER / script), *args],
        cwd=cwd,
        env={"PATH": f"{path}{VENV_BIN}:/usr/bin:/bin", "HOME": "/nonexistent", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_service_entrypoint_reads_the_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "postgres_password"
    secret.write_text("pa ss:w@rd/#1\n")
    # `env` in place of faceid shows the environment the service would start with.
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "faceid").symlink_to(shutil.which("env") or "/usr/bin/env")
    result = run_entrypoint("entrypoint.sh", [], tmp_path, {"PGPASSWORD_FILE": str(secret)}, path=f"{probe}:")
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert env["PGPASSWORD"] == "pa ss:w@rd/#1" and "PGPASSWORD_FILE" not in env

    missing = run_entrypoint("entrypoint.sh", [], tmp_path, {"PGPASSWORD_FILE": str(tmp_path / "nope")}, f"{probe}:")
    assert missing.returncode == 1 and "PGPASSWORD_FILE" in missing.stderr and not missing.stdout


def test_service_entrypoint_runs_faceid(tmp_path: Path) -> None:
    result = run_entrypoint("entrypoint.sh", ["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "migrate" in result.stdout


@pytest.mark.torch
def test_training_entrypoint_help_works_without_a_gpu(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    (tmp_path / "runs").mkdir()
    result = run_entrypoint("train-entrypoint.sh", ["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "export" in result.stdout and "train" in result.stdout
    # `train` goes to torchrun only with GPUs; here it says so and runs once on the CPU.
    result = run_entrypoint("train-entrypoint.sh", ["train", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no GPU visible" in result.stderr and "--config" in result.stdout


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to drop to uid 10001"
)
def test_training_entrypoint_stops_when_runs_is_not_writable() -> None:
    """Without --user, uid 10001 cannot write the host's runs/: `train` says so at once;
    export and the rest may read it from a read-only mount."""
    as_10001 = [
        "setpriv",
        "--reuid=10001",
        "--regid=10001",
        "--clear-groups",
        "sh",
        str(DOCKER / "train-entrypoint.sh"),
    ]
    with tempfile.TemporaryDirectory() as work:  # not under pytest's root-only tmp folder
        Path(work).chmod(0o755)
        (Path(work) / "runs").mkdir(mode=0o755)  # root's, as a host folder of another uid is
        env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": "/root"}
        train = subprocess.run(
            [*as_10001, "train", "--config", "training/configs/cpu_small.toml"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert train.returncode == 1
        assert "runs is not writable by uid 10001" in train.stderr and "--user" in train.stderr
        export = subprocess.run(
            [*as_10001, "export", "--help"], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )
        # (Whether it then runs depends on uid 10001 reaching this machine's Python.)
        assert "not writable" not in export.stderr


def test_training_image_workspace_is_open_to_any_uid() -> None:
    """`--user $(id -u):$(id -g)` must reach the configs; uid 10001 owns the runs/ and models/
    mount points, for runs without --user on a named volume."""
    runs = " ".join(a for n, a in instructions(TRAIN) if n == "RUN")
    assert "chmod 0755 /workspace" in runs and "chmod -R a+rX /workspace" in runs
    assert "chown 10001:10001 runs models" in runs
    readme = (ROOT / "README.md").read_text()
    assert '--user "$(id -u):$(id -g)"' in readme and '-v "$PWD/models:/workspace/models"' in readme
