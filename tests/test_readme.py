"""The README a new user follows: every setting documented, no link out of the repository,
and the commands of its tour exist as written."""

from __future__ import annotations

import re
from pathlib import Path

from locator.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _config_table() -> str:
    start = README.index("## Configuration")
    return README[start : README.index("\n## ", start + 1)]


def test_every_setting_is_in_the_configuration_table() -> None:
    table = _config_table()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    missing = {name.upper() for name in Settings.model_fields} - documented
    assert not missing, f"settings missing from the README's table: {sorted(missing)}"


def test_links_stay_inside_the_repository() -> None:
    for doc in (ROOT / "README.md", ROOT / "ARCHITECTURE.md", *ROOT.glob("docs/*.md")):
        text = doc.read_text()
        assert not re.search(r"(?<!\.)\.\./", text), f"{doc.name} points outside the repository"
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if "://" in target:
                continue
            assert (doc.parent / target).exists(), f"{doc.name}: broken link {target}"


def test_the_tour_uses_files_that_exist_and_no_fixed_ids() -> None:
    tour = README[README.index("### A quick tour") : README.index("### CSV import")]
    for path in re.findall(r"import (docs/\S+)", tour):
        assert (ROOT / path).exists(), path
    # The demo already holds elders 1..24: the tour reads the id it was given.
    assert not re.search(r"\"elder_id\\?\":\s*\d", tour)
    assert "elders/1/" not in README
