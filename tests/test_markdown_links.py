"""Every relative link in every tracked markdown file resolves to a file or folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [REPO / p for p in out if (REPO / p).is_file()]


def broken_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    broken = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # external URL, mailto:, or an in-page anchor
        target = unquote(target.split("#", 1)[0])
        if not (path.parent / target).exists():
            broken.append(target)
    return broken


def test_markdown_files_found() -> None:
    assert any(p.name == "README.md" for p in markdown_files())


def test_every_relative_link_resolves() -> None:
    problems = {str(p.relative_to(REPO)): broken_links(p) for p in markdown_files()}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, f"broken links: {problems}"
