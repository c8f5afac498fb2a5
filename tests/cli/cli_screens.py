"""Render a rich renderable at a given width and read the screen back (for the CLI tests)."""

from __future__ import annotations

from rich.console import Console


def screen(renderable: object, width: int) -> str:
    con = Console(width=width, record=True, color_system=None)
    con.print(renderable)
    return con.export_text()


def words(text: str) -> list[str]:
    """The words of a screen, table rules removed (a wrapped reason spans lines)."""
    return [w for w in text.replace("│", " ").replace("┃", " ").split() if w.strip("━─┏┓┗┛")]


def rows(text: str) -> dict[str, str]:
    """Table rows by their first cell: each later cell's wrapped lines joined, then the cells
    in column order ("Pi 4 B r1.4 serving ..."), so a wrapped reason reads as one phrase."""
    cols: dict[str, list[list[str]]] = {}
    name = ""
    for line in text.splitlines():
        cells = line.split("│")
        if len(cells) < 3:
            continue
        name = cells[1].strip() or name
        row = cols.setdefault(name, [[] for _ in cells[2:-1]])
        for k, cell in enumerate(cells[2:-1]):
            row[k].append(cell.strip())
    return {n: " ".join(" ".join(" ".join(c).split()) for c in row if " ".join(c).strip())
            for n, row in cols.items()}
