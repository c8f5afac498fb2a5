"""Tables that fit the terminal they are printed on, and the short board name they show.

Used by the CLI and by `edgekit.thermal.monitor`; it lives outside `edgekit.cli` so that the
thermal package (a lower layer) never imports the CLI.

A reader of `nodes check`, `status` or `monitor` on an 80-column terminal must still see every
node's name, board, verdict and reason. So each column says how much it matters: the columns
that must stay (rank 0) are always shown, free text (a reason) wraps at word boundaries, and
the other columns are dropped least important first until the table fits. A line under the
table names the columns dropped, so nothing disappears silently; no cell is cut with an
ellipsis. The layout is chosen when the table is rendered (`__rich_console__`), from the width
rich offers, so a resized terminal under `rich.live` gets a new layout on the next frame.

Cells are plain `str` (never parsed as console markup: node errors contain brackets) or
`rich.text.Text` for colour.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, RenderableType
from rich.table import Table
from rich.text import Text

#: what a column costs beyond its content: one space of padding each side, one rule
_PAD = 2
_RULE = 1


@dataclass(frozen=True)
class Col:
    """One column. `rank` 0: always shown; otherwise, as the width runs out, the column with
    the highest rank goes first. A `wrap` column holds free text that wraps at word boundaries
    and is given at least `min_width` characters (when its text is that long)."""

    header: str
    rank: int = 0
    wrap: bool = False
    min_width: int = 12
    justify: str = "left"
    # not shown at all when every cell is blank (no reason to give); a rank > 0 column always
    hide_empty: bool = False


def _text(cell: str | Text) -> Text:
    return cell if isinstance(cell, Text) else Text(cell)


def _longest_line(texts: Iterable[Text]) -> int:
    return max((line.cell_len for t in texts for line in t.split("\n", allow_blank=True)),
               default=0)


def _longest_word(texts: Iterable[Text]) -> int:
    return max((len(word) for t in texts for word in t.plain.split()), default=0)


@dataclass
class _Need:
    """Characters one column needs: `least` to be shown without cutting, `full` for no wrap."""

    least: int
    full: int


class FitTable:
    """A rich renderable: a Table laid out for the width it is rendered at."""

    def __init__(self, cols: list[Col], title: str | None = None) -> None:
        self.cols = cols
        self.title = title
        self.rows: list[list[Text]] = []

    def add_row(self, *cells: str | Text) -> None:
        if len(cells) != len(self.cols):
            raise ValueError(f"{len(cells)} cells for {len(self.cols)} columns")
        self.rows.append([_text(c) for c in cells])

    def _need(self, k: int) -> _Need:
        col = self.cols[k]
        texts = [Text(col.header), *(row[k] for row in self.rows)]
        full = _longest_line(texts)
        if not col.wrap:
            return _Need(full, full)
        header = _longest_line(texts[:1])
        return _Need(min(full, max(col.min_width, header)), full)

    def layout(self, width: int) -> tuple[Table, list[str]]:
        """The table for `width` characters and the headers of the columns left out."""
        needs = [self._need(k) for k in range(len(self.cols))]
        blank = [k for k, col in enumerate(self.cols) if (col.hide_empty or col.rank > 0)
                 and all(not row[k].plain.strip() for row in self.rows)]
        shown = [k for k in range(len(self.cols)) if k not in blank]

        def overhead(n: int) -> int:
            return n * (_PAD + _RULE) + _RULE

        while overhead(len(shown)) + sum(needs[k].least for k in shown) > width:
            droppable = [k for k in shown if self.cols[k].rank > 0]
            if not droppable:
                break  # only the columns that must stay: wrap columns fold long words
            # highest rank first; among equals the rightmost
            shown.remove(max(droppable, key=lambda k: (self.cols[k].rank, k)))
        widths = self._widths(shown, needs, width - overhead(len(shown)))
        table = Table(title=self.title, header_style="bold", title_justify="left")
        for k in shown:
            col = self.cols[k]
            table.add_column(col.header, width=widths[k], justify=col.justify,  # type: ignore[arg-type]
                             no_wrap=not col.wrap, overflow="fold")
        for row in self.rows:
            table.add_row(*(row[k] for k in shown))
        hidden = [self.cols[k].header.replace("\n", " ") for k in range(len(self.cols))
                  if k not in shown and k not in blank]
        return table, hidden

    def _widths(self, shown: list[int], needs: list[_Need], room: int) -> dict[int, int]:
        """Fixed columns get their full width; wrap columns share what is left, each at
        least its `least`."""
        widths = {k: max(1, needs[k].full) for k in shown}
        wrap = [k for k in shown if self.cols[k].wrap]
        left = room - sum(widths[k] for k in shown if k not in wrap)
        if not wrap or sum(needs[k].full for k in wrap) <= left:
            return widths
        # water-filling: the column wanting least is served first, so a short board name
        # is not wrapped to give a long reason a few more characters
        order = sorted(wrap, key=lambda k: needs[k].full)
        for i, k in enumerate(order):
            later = sum(needs[j].least for j in order[i + 1:])
            share = min(left - later, left // (len(order) - i))
            widths[k] = max(1, needs[k].least, min(needs[k].full, share))
            left -= widths[k]
        return widths

    def __rich_console__(self, console: Console,
                         options: ConsoleOptions) -> Iterator[RenderableType]:
        table, hidden = self.layout(options.max_width)
        yield table
        if hidden:
            yield Text(f"(not shown at {options.max_width} columns: {', '.join(hidden)}; "
                       "a wider terminal or --json has them)", style="dim")


def short_board(model: str | None) -> str:
    """The board model shortened: "Raspberry Pi 4 Model B Rev 1.4" -> "Pi 4 B r1.4"."""
    model = model or ""
    return model.replace("Raspberry Pi", "Pi").replace(" Model", "").replace(" Rev ", " r") or "?"
