"""ARCHITECTURE.md stays true: every module is on the map, every shell module is fenced off."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("locator", "devices", "geofences", "alerts")


def _modules() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name != "__init__.py":
                found.append(path.relative_to(ROOT).as_posix())
    return found


def test_every_module_is_on_the_map() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    mentioned = set(re.findall(r"`([\w/]+(?:\.py)?/?)`", text))
    missing = []
    for module in _modules():
        folder = module.rsplit("/", 1)[0] + "/"
        if module not in mentioned and folder not in mentioned:
            missing.append(module)
    assert not missing, f"add these to ARCHITECTURE.md's module map: {missing}"


def test_core_contract_forbids_every_shell_module() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    core = next(c for c in contracts if c.get("source_modules") == ["locator.core"])
    shell = {
        p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        for p in (ROOT / "locator").glob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    assert shell <= set(core["forbidden_modules"]), shell - set(core["forbidden_modules"])
