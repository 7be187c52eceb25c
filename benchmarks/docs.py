"""docs/performance.md: every benchmark owns one `## <title>` section and rewrites only it."""
from __future__ import annotations

from pathlib import Path

DOCS_FILE = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def replace_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the section `## title` of the Markdown file, leaving the others."""
    heading = f"## {title}"
    section = heading + "\n\n" + body.rstrip("\n") + "\n"
    text = path.read_text() if path.exists() else "# Performance\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        rest = "".join(lines[end:])
        new = "".join(lines[:start]) + section + ("\n" + rest if rest else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
