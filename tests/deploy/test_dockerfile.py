"""Dockerfile: lints clean and installs what pyproject declares, as a non-root user, without secrets."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

# End-to-end: kubectl kustomize, hadolint and Helm run as processes.
pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or "hadolint"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\").strip() if current else stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, rest = current.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            current = ""
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _build_args() -> dict[str, str]:
    args = {}
    for keyword, rest in _instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value.strip('"')
    return args


def _pip_commands(subcommand: str = "install") -> list[list[str]]:
    """The argument lists of every ``pip SUBCOMMAND`` in RUN instructions, build arguments substituted."""
    args = _build_args()
    found = []
    for keyword, rest in _instructions():
        if keyword != "RUN":
            continue
        lexer = shlex.shlex(rest, posix=True, punctuation_chars=";&|>")
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for token in lexer:
            if token in ("&&", ";", "||", ">"):
                commands.append([])
            else:
                commands[-1].append(token)
        for words in commands:
            if words[:2] == ["pip", subcommand]:
                resolved = [
                    re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), word) for word in words[2:]
                ]
                found.append(resolved)
    return found


def _pip_installs() -> list[list[str]]:
    return _pip_commands("install")


def test_hadolint_finds_no_errors_or_warnings():
    result = subprocess.run(
        [HADOLINT, "--format", "json", "--failure-threshold", "error", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0, findings
    assert [f for f in findings if f["level"] in ("error", "warning")] == []


def test_builds_the_package_as_a_wheel_with_no_extras_and_installs_it_not_editable():
    (wheel,) = _pip_commands("wheel")
    assert wheel[-1] == "." and "--no-deps" in wheel  # no extras; the dependencies have their own layer
    wheel_dir = wheel[wheel.index("--wheel-dir") + 1].rstrip("/")
    runtime = _stages()[-1]
    (copy,) = [shlex.split(rest) for keyword, rest in runtime if keyword == "COPY" and rest.startswith("--from=wheel")]
    assert copy[1].rstrip("/") == wheel_dir
    (install,) = [words for words in _pip_installs() if words[-1].endswith(".whl")]
    assert install[-1] == f"{copy[-1].rstrip('/')}/*.whl" and "--no-deps" in install
    assert not {"-e", "--editable"} & set(install)


def test_installs_exactly_the_dependencies_of_the_project_table():
    """Running needs only [project] dependencies: test and demo extras stay out of the image."""
    runtime = _stages()[-1]
    (copy,) = [shlex.split(rest) for keyword, rest in runtime if keyword == "COPY" and "pyproject.toml" in rest]
    copied_to = copy[-1].rstrip("/") + "/pyproject.toml"
    (run,) = [shlex.split(rest) for keyword, rest in runtime if keyword == "RUN" and copied_to in rest]
    program, requirements = run[run.index("-c") + 1], run[run.index(">") + 1]
    # The program that lists them, run on this checkout's pyproject.toml.
    listed = subprocess.run(
        [sys.executable, "-c", program.replace(copied_to, str(REPO_ROOT / "pyproject.toml"))],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.splitlines()
    assert listed == tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert ["-r", requirements] in [words[-2:] for words in _pip_installs()]


def test_pins_torch_and_torchvision_as_the_setup_script_does():
    setup = (REPO_ROOT / "scripts" / "setup-env.sh").read_text()
    expected = set(re.findall(r'"(torch(?:vision)?==[\w.]+)"', setup))
    assert len(expected) == 2
    pinned = {w for words in _pip_installs() for w in words if re.match(r"torch(vision)?==", w)}
    assert pinned == expected


def test_copies_only_what_building_the_package_needs_and_it_builds(tmp_path):
    builder = _stages()[0]
    copies = [shlex.split(rest) for keyword, rest in builder if keyword == "COPY"]
    sources = [source for words in copies for source in words[:-1]]
    assert set(sources) == {"pyproject.toml", "README.md", "actiontrain"}
    context = tmp_path / "src"
    for source in sources:
        path = REPO_ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy(path, context / source)
    # What `pip install .` builds in the image, from exactly those files.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("actiontrain-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "actiontrain/recipes/x3d_s.yaml",
        "actiontrain/launch/rendezvous.py",
        "actiontrain/cli/__init__.py",
    } <= names


def test_dockerignore_keeps_local_state_out_of_the_context():
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "**"  # an allow-list
    assert {p[1:].rstrip("/") for p in patterns if p.startswith("!")} == {"pyproject.toml", "README.md", "actiontrain"}
    assert {".git", ".venv", ".aws", "**/__pycache__", "tests"} <= set(patterns)


def test_runtime_runs_as_a_fixed_non_root_uid():
    runtime = _stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000  # numeric: runAsNonRoot can verify it
    assert int(uid) == 10001  # the chart's and the manifests' runAsUser
    assert f"--uid {uid}" in " ".join(rest for keyword, rest in runtime if keyword == "RUN")


def test_runtime_has_ffmpeg_libraries_for_torchcodec_and_a_writable_cache():
    runtime = " ".join(rest for keyword, rest in _stages()[-1])
    for library in (
        "libavcodec",
        "libavformat",
        "libavutil",
        "libswscale",
        "libswresample",
        "libavfilter",
        "libavdevice",
    ):
        assert library in runtime
    assert "ACTIONTRAIN_CACHE_DIR=/var/cache/actiontrain" in runtime
    assert "-o 10001 -g 10001 /var/cache/actiontrain" in runtime


def test_runtime_sets_the_switch_for_a_fresh_rendezvous_store_per_restart():
    from actiontrain.distributed import SHARED_STORE_SWITCH

    runtime = " ".join(rest for keyword, rest in _stages()[-1] if keyword == "ENV")
    assert f"{SHARED_STORE_SWITCH}=1" in runtime


def test_entrypoint_is_the_cli_in_exec_form():
    entrypoints = [rest for keyword, rest in _instructions() if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["actiontrain"]


@pytest.mark.parametrize("keyword", ["ENV", "ARG", "LABEL"])
def test_bakes_in_no_credentials(keyword):
    for instruction, rest in _instructions():
        if instruction == keyword:
            assert not re.search(r"AWS_|SECRET|TOKEN|PASSWORD", rest, re.IGNORECASE), rest
    copied = " ".join(rest for instruction, rest in _instructions() if instruction in ("COPY", "ADD"))
    assert ".aws" not in copied and ".env" not in copied
