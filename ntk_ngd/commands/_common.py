"""Argument parsing helpers shared by the subcommands."""
from __future__ import annotations

import json

import contextlib
import sys

from tqdm import tqdm


def int_list(flag: str, text: str) -> list[int]:
    """'1,2,5' or '1-8' → list of ints."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-")
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ValueError(f"{flag} must be integers like '1,2,3' or '1-8', got {text!r}") from None
    if not out:
        raise ValueError(f"{flag} is empty")
    return out


def width_list(text: str) -> list[int | None]:
    """'256,1024,inf' → [256, 1024, None]."""
    out: list[int | None] = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in ("inf", "infinite", "infinity"):
            out.append(None)
        else:
            try:
                w = int(part)
            except ValueError:
                raise ValueError(f"--widths must be integers or 'inf', got {part!r}") from None
            if w < 1:
                raise ValueError(f"--widths must be >= 1, got {w}")
            out.append(w)
    return out


@contextlib.contextmanager
def progress_bar(total: int, desc: str, quiet: bool = False):
    """A tqdm bar on stderr, shown on a terminal only and never with --json."""
    bar = tqdm(total=total, desc=desc, file=sys.stderr, disable=quiet or not sys.stderr.isatty(), leave=False)
    try:
        yield bar
    finally:
        bar.close()


def add_profile_flags(p, quick: str, full: str, tiny: str) -> None:
    """--quick / --full / --tiny, mutually exclusive, stored as ``args.profile`` (help texts given)."""
    group = p.add_mutually_exclusive_group()
    for name, text in (("quick", quick), ("full", full), ("tiny", tiny)):
        group.add_argument(f"--{name}", dest="profile", action="store_const", const=name, help=text)


def emit(args, payload: dict, text: str) -> None:
    """Print ``payload`` as JSON when ``--json`` was given, else the human-readable ``text``."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, default=float))
    else:
        print(text)
