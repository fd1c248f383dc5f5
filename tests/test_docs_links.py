"""Every reference to the background notes resolves inside the repository.

Code, tests and docs cite the notes as ``docs/background/<file>.md#<anchor>``; Markdown files link
them relatively. Each anchor must exist as an explicit ``<a id="...">`` in the target file, and
no file uses section-sign references, which point at nothing the repository holds.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITE = re.compile(r"docs/background/([\w-]+\.md)#([\w-]+)")
LINK = re.compile(r"\]\(([\w./-]+\.md)(?:#([\w-]+))?\)")
ANCHOR = re.compile(r'<a id="([\w-]+)"></a>')
TEXT = (".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg")


def _files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / f for f in out if f.endswith(TEXT) and (ROOT / f).exists()]


def _anchors(path: Path) -> set[str]:
    return set(ANCHOR.findall(path.read_text()))


def test_background_citations_resolve() -> None:
    bad = []
    for path in _files():
        text = path.read_text()
        for name, anchor in CITE.findall(text):
            target = ROOT / "docs" / "background" / name
            if not target.exists() or anchor not in _anchors(target):
                bad.append(f"{path.relative_to(ROOT)}: docs/background/{name}#{anchor}")
        if path.suffix == ".md":
            for rel, anchor in LINK.findall(text):
                target = (path.parent / rel).resolve()
                if not target.exists() or (anchor and anchor not in _anchors(target)):
                    bad.append(f"{path.relative_to(ROOT)}: link {rel}#{anchor}")
    assert not bad, "unresolved references:\n" + "\n".join(bad)


def test_no_section_number_references() -> None:
    bad = [str(p.relative_to(ROOT)) for p in _files() if "\u00a7" in p.read_text()]
    assert not bad, f"section-number references (use docs/background/<file>.md#<anchor>): {bad}"
