"""The repository documents itself: no pointer outside it, and the README's links resolve."""

from __future__ import annotations

import re
from pathlib import Path

SKIPPED_DIRS = {"build", "data", "node_modules"}
# Built from parts so that this file does not contain what it looks for.
OUTSIDE = ("../" + "shared", "DESIGN" + ".md")


def project_files(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") or p in SKIPPED_DIRS or p.endswith(".egg-info") for p in parts):
            continue
        if path.is_file() and path.suffix in {"", ".md", ".py", ".toml", ".ini", ".yml", ".html"}:
            found.append(path)
    return found


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_nothing_points_outside_the_repository(project_root: Path) -> None:
    for path in project_files(project_root):
        text = path.read_text(encoding="utf-8", errors="replace")
        for pointer in OUTSIDE:
            assert pointer not in text, f"{path.relative_to(project_root)} mentions {pointer}"


def test_readme_links_to_the_docs_and_every_link_resolves(project_root: Path) -> None:
    readme = (project_root / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)(#[^)]+)?\)", readme)
    linked = {target for target, _ in links}
    for doc in ("docs/api.md", "docs/artifact.md", "docs/metrics.md", "docs/operations.md"):
        assert doc in linked
    for target, anchor in links:
        if target.startswith("http"):
            continue
        path = project_root / target
        assert path.is_file(), target
        if anchor:
            assert anchor[1:] in anchors(path.read_text()), f"{target}{anchor}"
    for doc in (project_root / "docs").glob("*.md"):
        for target, _ in re.findall(r"\]\(([^)#]+)(#[^)]+)?\)", doc.read_text()):
            if not target.startswith("http"):
                assert (doc.parent / target).is_file(), f"{doc.name} -> {target}"


def test_the_documented_limits_are_the_enforced_ones(project_root: Path) -> None:
    from app.config import Settings
    from app.middleware import DEFAULT_MAX_METADATA_BYTES

    operations = (project_root / "docs" / "operations.md").read_text()
    api = (project_root / "docs" / "api.md").read_text()
    default = Settings.model_fields["max_metadata_bytes"].default
    assert default == DEFAULT_MAX_METADATA_BYTES == 4096
    assert "4 KiB" in operations and "4 KiB" in api
    assert "at least **16 characters**" in operations and "at least 16" in api
    documented = set(re.findall(r"`CALIB_([A-Z_]+)`", operations))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields <= documented, fields - documented
