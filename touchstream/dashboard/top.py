"""`touchstream top`: the ops view's tables in the terminal, refreshed in place (rich).

It renders the same snapshot as the web page: from the running `touchstream up` that
owns the embedded chDB (its dashboard's `/api/snapshot`), or read directly from a
ClickHouse server. `q` (or Ctrl-C) quits. Piped or redirected, it prints the tables
once and exits.
"""

from __future__ import annotations

import contextlib
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

BARS = "▁▂▃▄▅▆▇█"
NONE = "-"
#: Panels in order, with at most this many rows each in the terminal.
PANELS = {
    "waiting": ("Waiting queue, oldest first", 12),
    "sla": ("SLA: breached now, breaching next", 10),
    "responses": ("Response times by channel", 12),
    "levels": ("Customers by engagement level", 6),
    "changes": ("Latest level changes", 8),
    "top": ("Top engaged customers", 8),
    "at_risk": ("At risk: down two levels or more in 7 days", 8),
    "experience": ("Experience, 30 days", 12),
    "health": ("Pipeline health", 8),
}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 0:  # overdue
        return f"-{duration(-seconds)}"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def spark(values: list[float | None]) -> str:
    present = [value for value in values if value is not None]
    if not present:
        return NONE
    top = max(present) or 1.0
    return "".join(
        " " if v is None else BARS[min(int(v / top * (len(BARS) - 1)), len(BARS) - 1)] for v in values
    )


def cell(kind: str, value: Any) -> Text | str:
    if value is None:
        return NONE
    if kind == "seconds":
        return duration(float(value))
    if kind == "number":
        return f"{float(value):.1f}"
    if kind == "time":
        return str(value).replace("T", " ")[:19]
    if kind == "spark":
        return spark(list(value))
    return str(value)


def panel(name: str, data: dict[str, Any]) -> Table:
    title, limit = PANELS[name]
    caption = f"{title}  ({data['count']}, updated {str(data['updated_at'])[11:19]})"
    table = Table(title=caption, title_justify="left", expand=True)
    numeric = {"seconds", "int", "number"}
    for column in data["columns"]:
        table.add_column(column["label"], justify="right" if column["kind"] in numeric else "left")
    for row in data["rows"][:limit]:
        style = "bold red" if row.get("over_sla") else ("green" if row.get("direction") == "rising" else None)
        if row.get("direction") == "falling":
            style = "red"
        cells = [cell(column["kind"], row.get(column["key"])) for column in data["columns"]]
        if row.get("provisional"):  # within the grace period: a late event may still correct it
            cells[0] = Text.assemble(cells[0], " ", ("live", "italic cyan"))
            style = f"{style or ''} italic".strip()
        table.add_row(*cells, style=style)
    if not data["rows"]:
        table.add_row("nothing yet")
    return table


def render(snapshot: dict[str, Any]) -> RenderableType:
    reference = snapshot.get("reference") or "no events yet"
    header = Text(
        f"Touchstream  live engagement   event time now: {reference}   'live' = provisional   q quits",
        style="bold",
    )
    return Group(header, *(panel(name, snapshot[name]) for name in PANELS if name in snapshot))


@contextlib.contextmanager
def keys() -> Iterator[Callable[[], str | None]]:
    """A non-blocking key reader on a terminal; on anything else, one that never reads."""
    if not sys.stdin.isatty():
        yield lambda: None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield lambda: sys.stdin.read(1) if select.select([sys.stdin], [], [], 0)[0] else None
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(read: Callable[[], dict[str, Any]], refresh: float, console: Console | None = None) -> None:
    """Refresh in place until `q`; on anything but a terminal, print the tables once."""
    console = console or Console()
    if not console.is_terminal:
        console.print(render(read()))
        return
    with keys() as key, Live(render(read()), console=console, screen=console.is_terminal,
                              auto_refresh=False) as live:  # fmt: skip
        next_read = time.monotonic() + refresh
        while True:
            pressed = key()
            if pressed in ("q", "Q"):
                return
            if time.monotonic() >= next_read:
                live.update(render(read()), refresh=True)
                next_read = time.monotonic() + refresh
            time.sleep(0.05)
