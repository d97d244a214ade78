"""The runtime path works on the runtime dependencies alone — what `make run` installs.

`make run` does `pip install -e .` without extras; a module on a runtime path importing a
test-only package (httpx once) crashed it on a clean clone while the test venv hid it. Here a
fresh venv gets `[project.dependencies]` only (a layer cached per dependency list and Python,
under .venv/runtime-check-<hash>), then the project itself, non-editable so that its package
data is what a wheel ships, reinstalled on every run. From a directory outside the source
tree, every module of the packages is imported, the test-only packages must be missing, and
every CLI command answers --help.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ROOT / ".venv"  # gitignored; `make clean` removes it
TEST_ONLY = ("pytest", "mypy", "playwright")
# Commands the README and the demo send people to; each must still be found by discovery.
REQUIRED_COMMANDS = (
    ("demo",),
    ("bench",),
    ("bench", "ingest"),
    ("bench", "alerts"),
    ("bench", "fences"),
    ("token", "create"),
    ("simulate",),
    ("import",),
)

# Runs in the fresh venv (python -I: no PYTHONPATH, no user site, not the script's directory).
CHECK_SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.util, json, pkgutil, sys, traceback

    packages = sys.argv[1:]
    report = {"imported": [], "failures": {}, "locations": {}, "present": [], "commands": []}

    def failed(name):
        report["failures"][name] = traceback.format_exc()

    for package_name in packages:
        try:
            package = importlib.import_module(package_name)
        except BaseException:
            failed(package_name)
            continue
        report["locations"][package_name] = list(package.__path__)
        for info in pkgutil.walk_packages(package.__path__, package_name + ".", onerror=failed):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue  # runs the CLI; checked as `python -m locator --help`
            try:
                importlib.import_module(info.name)
            except BaseException:
                failed(info.name)
            else:
                report["imported"].append(info.name)

    for name in json.loads(sys.stdin.read()):
        try:
            if importlib.util.find_spec(name) is not None:
                report["present"].append(name)
        except BaseException:
            report["present"].append(name)

    try:
        import typer.main
        from locator.cli import app

        def walk(command, path):  # a group has .commands (typer may vendor its own click)
            yield path
            for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
                if not getattr(sub, "hidden", False):
                    yield from walk(sub, [*path, name])

        report["commands"] = list(walk(typer.main.get_command(app), []))
    except BaseException:
        failed("<command discovery>")
    print(json.dumps(report))
    """
)


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages(pyproject: dict[str, Any]) -> list[str]:
    """Top-level packages the wheel ships: `[tool.setuptools.packages.find] include`."""
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.rstrip("*").rstrip(".").split(".")[0] for pattern in include})


def _bin(venv: Path, name: str) -> str:
    return str(venv / "bin" / name)


def _env(venv: Path) -> dict[str, str]:
    """As after `source venv/bin/activate`, with nothing of this interpreter's paths leaking in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HOMEWARD_")
        and k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV"}
    }
    env.update(
        VIRTUAL_ENV=str(venv),
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONNOUSERSITE="1",
        NO_COLOR="1",
        COLUMNS="120",
    )
    return env


def _run(
    argv: list[str], *, venv: Path, cwd: Path, timeout: float, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=cwd,
        env=_env(venv),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _pip(venv: Path, *args: str, cwd: Path, timeout: float) -> None:
    result = _run([_bin(venv, "python"), "-m", "pip", *args], venv=venv, cwd=cwd, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"`pip {' '.join(args)}` failed ({result.returncode}) in {venv}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}",
            pytrace=False,
        )


@contextmanager
def _locked(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive flock on ``path``; yields False (not locked) when ``wait`` is off and busy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prune_other_layers(keep: Path) -> None:
    """Layers for older dependency lists are a few hundred MB each; drop the idle ones."""
    for layer in LAYERS.glob("runtime-check-*"):
        if layer == keep or not layer.is_dir():
            continue
        with _locked(layer.with_name(layer.name + ".lock"), wait=False) as locked:
            if locked:
                shutil.rmtree(layer, ignore_errors=True)


def _index_unreachable(work: Path) -> str | None:
    """Why pip cannot fetch packages (a short timeout, no cache), or None if it can."""
    probe = work / "probe"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir"),
            *("--timeout", "20", "--retries", "1", "--dest", str(probe), "wheel"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work,
    )
    shutil.rmtree(probe, ignore_errors=True)
    if result.returncode == 0:
        return None
    return (result.stdout + result.stderr).strip()[-2000:] or f"exit {result.returncode}"


def _deps_layer(venv: Path, requirements: list[str], key: str, work: Path) -> None:
    """The venv with the runtime dependencies only; built once per key (caller holds the lock)."""
    marker = venv / ".runtime-deps"
    if marker.exists() and marker.read_text() == key:
        return
    unreachable = _index_unreachable(work)
    if unreachable is not None:
        message = (
            "cannot build the runtime-dependency venv: pip cannot reach the package index "
            f"(`pip download wheel` failed):\n{unreachable}"
        )
        if os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    shutil.rmtree(venv, ignore_errors=True)  # a half-built layer from an interrupted run
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip(venv, "install", "--quiet", "--upgrade", "pip", cwd=work, timeout=300)
    _pip(venv, "install", "--quiet", *requirements, cwd=work, timeout=540)
    marker.write_text(key)


def _source_copy(pyproject: dict[str, Any], packages: list[str], dest: Path) -> Path:
    """What the build reads, copied: an in-tree build would leave build/ in the checkout, and
    files deleted from the source would linger in build/lib and be shipped from there."""
    dest.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for entry in ROOT.iterdir():
        wanted = entry.name in {"pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in"}
        wanted |= entry.name == pyproject["project"].get("readme")
        wanted |= entry.name.upper().startswith(("LICEN", "COPYING", "NOTICE", "AUTHORS"))
        if entry.is_file() and wanted:
            shutil.copy2(entry, dest / entry.name)
        elif entry.is_dir() and entry.name in packages:
            shutil.copytree(entry, dest / entry.name, ignore=skip)
    return dest


def _missing_package_data(pyproject: dict[str, Any], locations: dict[str, list[str]]) -> list[str]:
    """Files matching `[tool.setuptools.package-data]` in the source but not installed."""
    missing = []
    for package, patterns in pyproject["tool"]["setuptools"].get("package-data", {}).items():
        source = ROOT.joinpath(*package.split("."))
        installed = [Path(p) for p in locations.get(package.split(".")[0], [])]
        if not installed:
            continue  # the import failure is reported on its own
        target = installed[0].joinpath(*package.split(".")[1:])
        for pattern in patterns:
            for path in source.glob(pattern):
                relative = path.relative_to(source)
                wanted = path.is_file() and "__pycache__" not in relative.parts
                if wanted and not (target / relative).is_file():
                    missing.append(f"{package}/{relative}")
    return sorted(missing)


@pytest.mark.timeout(600)
def test_runtime_path_needs_only_runtime_dependencies(tmp_path: Path) -> None:
    pyproject = _pyproject()
    packages = _packages(pyproject)
    assert {"locator", "devices", "geofences", "alerts"} <= set(packages), packages
    requirements = [
        *pyproject["project"]["dependencies"],
        *pyproject["build-system"]["requires"],  # setuptools>=77, wheel: the project's build
    ]
    key = json.dumps(
        {"requirements": requirements, "python": sys.version, "base": sys.base_prefix},
        sort_keys=True,
    )
    venv = LAYERS / f"runtime-check-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    outside = tmp_path / "cwd"  # not the checkout: its packages must not shadow the installed
    outside.mkdir()

    with _locked(venv.with_name(venv.name + ".lock")):
        _deps_layer(venv, requirements, key, tmp_path)
        _prune_other_layers(keep=venv)
        source = _source_copy(pyproject, packages, tmp_path / "src")
        _pip(
            venv,
            *("install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation"),
            *("--force-reinstall", str(source)),
            cwd=outside,
            timeout=300,
        )
        _pip(venv, "check", cwd=outside, timeout=120)

        script = tmp_path / "check_runtime.py"
        script.write_text(CHECK_SCRIPT)
        result = _run(
            [_bin(venv, "python"), "-I", str(script), *packages],
            venv=venv,
            cwd=outside,
            timeout=300,
            stdin=json.dumps(TEST_ONLY),
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        report = json.loads(result.stdout.strip().splitlines()[-1])

        failures = report["failures"]
        assert not failures, "modules that fail to import on the runtime dependencies:\n" + (
            "\n".join(f"--- {name}\n{error}" for name, error in sorted(failures.items()))
        )
        for package, paths in report["locations"].items():
            assert all(Path(p).is_relative_to(venv) for p in paths), (
                f"{package} was imported from {paths}, not from the fresh venv"
            )
        assert len(report["imported"]) > 50, report["imported"]
        assert not report["present"], (
            f"test-only packages are importable in the runtime venv: {report['present']}"
        )
        missing = _missing_package_data(pyproject, report["locations"])
        assert not missing, f"package data not installed: {missing}"

        commands = [tuple(path) for path in report["commands"]]
        absent = [" ".join(path) for path in REQUIRED_COMMANDS if path not in commands]
        assert not absent, f"commands not found in the CLI: {absent}; found {commands}"
        argvs = [[_bin(venv, "homeward"), *path, "--help"] for path in commands]
        argvs.append([_bin(venv, "python"), "-m", "locator", "--help"])

        def answer(argv: list[str]) -> str | None:
            done = _run(argv, venv=venv, cwd=outside, timeout=120)
            output = done.stdout + done.stderr
            if done.returncode == 0 and "Usage" in output and "Traceback" not in output:
                return None
            name = " ".join([Path(argv[0]).name, *argv[1:]])
            return f"--- `{name}` exited {done.returncode}:\n{output[-3000:]}"

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
            problems = [p for p in pool.map(answer, argvs) if p is not None]
        assert not problems, "\n".join(problems)
