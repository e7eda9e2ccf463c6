"""Command line: ``spikestore info PATH`` and ``spikestore demo [PATH]``.

Errors that come from the store or the file system (a missing, damaged or locked
store, a full disk, a path that is a file or a folder of other files) print one
line ``spikestore: error: ...`` on stderr and exit with status 2, never a
traceback; so does a bad argument (argparse's usage line and message). ``demo``
refuses a store already at its path unless given ``--append`` or ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["main", "info"]


def info(path: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A summary of every monitor and layer of the store at ``path`` (a directory or a
    URL).

    The spike rate comes from the stored summaries alone (nothing is decoded). A
    layer whose summary cannot be read gets ``"spike_rate": None`` and a line in
    the result's ``"warnings"``; any other error reading the store is raised. A
    ranked store (written by the ranks of a ``torch.distributed`` job) has a row
    per rank and layer, with its ``"rank"``, and its ``"ranks"`` at the top.
    """
    from .reader import RankedStoreReader
    from .reader import open as open_store

    store = open_store(path, storage_options=storage_options)
    layers: list[dict[str, Any]] = []
    warnings: list[str] = []
    out: dict[str, Any] = {"path": str(path), "format_version": store.version}
    if isinstance(store, RankedStoreReader):
        out["ranks"] = {
            "world_size": store.world_size,
            "recorded": store.recorded,
            "present": store.ranks,
        }
        for r in store.ranks:
            layers.extend({"rank": r, **_row(lay, warnings)} for lay in store.rank(r).layers())
    else:
        layers.extend(_row(lay, warnings) for lay in store.layers())
    return {**out, "layers": layers, "warnings": warnings}


def _row(layer: Any, warnings: list[str]) -> dict[str, Any]:
    from .analysis import mean_rate
    from .format import FormatError
    from .reader import ReadError

    stored = layer.nbytes_stored()
    f32 = layer.nbytes_float32()
    shapes = sorted({tuple(s["shape"]) for s in layer.segments})
    rate = None
    if layer.encodings == ["bitpack"]:
        try:
            rate = mean_rate(layer)
        except (ReadError, FormatError) as exc:
            warnings.append(f"no spike rate: {exc}")
    return {
        "monitor": layer.monitor,
        "layer": layer.name,
        "steps": len(layer),
        "structure": layer.structure,
        "shape": list(shapes[-1]) if len(shapes) == 1 else [list(s) for s in shapes],
        "dtype": sorted({s["dtype"] for s in layer.segments}),
        "encoding": layer.encodings,
        "bytes": stored,
        "float32_bytes": f32,
        "ratio_vs_float32": round(f32 / stored, 2) if stored else None,
        "spike_rate": rate,
    }


def _table(summary: dict[str, Any]) -> str:
    ranked = "ranks" in summary
    head = ["monitor", "layer", "steps", "shape", "dtype", "encoding", "bytes", "x f32", "rate"]
    head = ["rank", *head] if ranked else head
    rows = [head]
    for r in summary["layers"]:
        rows.append(
            ([str(r["rank"])] if ranked else [])
            + [
                r["monitor"],
                r["layer"] or "''",
                str(r["steps"]),
                "x".join(map(str, r["shape"]))
                if r["shape"] and isinstance(r["shape"][0], int)
                else str(r["shape"]),
                ",".join(r["dtype"]),
                ",".join(r["encoding"]),
                f"{r['bytes']:,}",
                f"{r['ratio_vs_float32']:.1f}" if r["ratio_vs_float32"] else "-",
                f"{r['spike_rate']:.4f}" if r["spike_rate"] is not None else "-",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"{summary['path']} (spikestore format {summary['format_version']})"]
    if ranked:
        rk = summary["ranks"]
        lines[0] += f", ranks {rk['present']} of world size {rk['world_size']}" + (
            f" (recorded {rk['recorded']})" if rk["recorded"] != rk["present"] else ""
        )
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spikestore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="summarise a store")
    p_info.add_argument("path")
    p_info.add_argument("--json", action="store_true", help="machine-readable output")
    p_info.add_argument(
        "--storage-options",
        type=json.loads,
        default=None,
        help='for a URL: JSON, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'',
    )
    p_demo = sub.add_parser("demo", help="record a small SNN into a store (the main job)")
    p_demo.add_argument("path", nargs="?", default="demo.spikes")
    p_demo.add_argument("--steps", type=_positive_int, default=300, help="training steps (>= 1)")
    p_demo.add_argument("--no-progress", action="store_true")
    existing = p_demo.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite", action="store_true", help="replace a store already at PATH"
    )
    existing.add_argument("--append", action="store_true", help="append to a store at PATH")
    p_export = sub.add_parser(
        "export", help="write a store as an NWB file (HDF5; needs the nwb extra)"
    )
    p_export.add_argument("path", help="the store")
    p_export.add_argument("out", help="the .nwb file to write")
    p_export.add_argument(
        "--dt", type=float, default=1e-3, help="seconds per time step (default 0.001)"
    )
    p_export.add_argument("--description", default=None, help="NWB session description")
    p_export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)

    from . import FormatError, ReadError, StoreLockedError, WriteError
    from .storage import StoreExistsError

    try:
        if args.command == "info":
            summary = info(args.path, args.storage_options)
            for line in summary["warnings"]:
                print(f"spikestore: warning: {' '.join(line.split())}", file=sys.stderr)
            print(json.dumps(summary, indent=2) if args.json else _table(summary))
            return 0
        if args.command == "export":
            from .export import to_nwb

            written = to_nwb(
                args.path,
                args.out,
                dt=args.dt,
                session_description=args.description,
                overwrite=args.overwrite,
            )
            print(f"wrote {written}")
            return 0
        from .demo import run

        result = run(
            args.path,
            steps=args.steps,
            progress=not args.no_progress,
            mode="a" if args.append else None,
            overwrite=args.overwrite,
        )
        print(_table(info(args.path)))
        print(
            f"\nrecorded {result['steps']} steps in {result['seconds']:.1f} s "
            f"({result['steps'] / result['seconds']:.1f} steps/s) into {args.path}"
        )
        return 0
    except StoreExistsError as exc:
        print(
            f"spikestore: error: {exc.where} already exists as a spikestore store; pass --append "
            "to add to it, or --overwrite to replace it",
            file=sys.stderr,
        )
        return 2
    except (
        OSError,
        ImportError,
        ValueError,
        FormatError,
        ReadError,
        StoreLockedError,
        WriteError,
    ) as exc:
        print(f"spikestore: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
