"""Argument parsing helpers shared by the subcommands."""
from __future__ import annotations

import argparse
import json


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


def add_progress_flag(p) -> None:
    """``--progress``/``--no-progress`` (default: lines on stderr only on a terminal and without --json;
    :mod:`ntk_ngd.progress`)."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="one line per finished unit on stderr (default: only when stderr is a terminal and "
                   "--json is not given; --progress forces it, --no-progress silences it)")


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
