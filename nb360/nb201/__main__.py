"""Command line: query an NB201 table file.

    python -m nb360.nb201 query --table PATH --epochs 200 (--index 123 | --arch STR) [--epoch E] [--json]

``--epochs`` selects the file's hp key ("12" or "200") and must be the one the file holds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

from nb360.data.rawfolder import RawDataError
from nb360.nb201.table import TableError, read_official

_UNITS = {"train_time": "s", "eval_time": "s", "train_time_total": "s", "eval_time_total": "s"}


def format_query(result: dict) -> str:
    """Human-readable lines, one ``name: value`` per field."""
    lines = []
    for key, value in result.items():
        if key == "params":
            text = f"{value:.6g} M"
        elif key == "flops":
            text = f"{value:.6g} MFLOPs"
        elif isinstance(value, float):
            text = f"{value:.6g}" + (f" {_UNITS[key]}" if key in _UNITS else "")
        else:
            text = str(value)
        lines.append(f"{key:>16}: {text}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nb360.nb201", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("query", help="one cell's numbers from an official-format table file")
    q.add_argument("--table", required=True, help="a .pickle.pbz2 file in the official format")
    q.add_argument("--epochs", required=True, type=int, help="the file's epoch budget (hp key): 12 or 200")
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="cell index (0..15624)")
    which.add_argument("--arch", help="official arch string, |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
    q.add_argument("--epoch", type=int, default=None, help="epochs trained, 1..EPOCHS (default: the last)")
    q.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args(argv)
    try:
        table = read_official(args.table, hp=args.epochs)
        result = table.query(args.index if args.index is not None else args.arch, args.epoch)
    except (TableError, RawDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        # NaN (the NB360 files' eval times) is not JSON; null says "not measured"
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in result.items()}
        print(json.dumps(clean, indent=2, allow_nan=False))
    else:
        print(format_query(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
