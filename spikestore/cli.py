"""Command line: ``spikestore info PATH``, ``spikestore demo [PATH]``,
``spikestore export PATH OUT`` and ``spikestore view PATH``.

Every failure prints one line on stderr, never a traceback: a bad argument gives
argparse's usage line and ``spikestore <command>: error: ...`` with exit status 2;
a failure while running (a missing, damaged or locked store, a path that is a file
or a folder of other files, a folder that cannot be written, a full disk, a missing
extra) gives ``spikestore: error: ...``, naming the path and what to do, with exit
status 1. ``--debug`` (or the environment variable ``SPIKESTORE_DEBUG=1``) shows the
traceback instead. ``demo`` refuses a store already at its path unless given
``--append`` or ``--overwrite``. ``export`` prints a ``spikestore: warning: ...`` line
on stderr for each layer it leaves out of the file (and says how many in its last line).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import sys
import warnings as _warnings
from typing import Any

__all__ = ["main", "info"]

#: Below this many bytes as float32, a layer's ``x f32`` ratio is not shown: its
#: bytes are mostly per-shard and per-step bookkeeping (shard indexes, the step
#: index, summaries), not data, and the ratio says nothing about compression.
MIN_RATIO_BYTES = 64 * 1024

_INFO_HELP = f"""\
Summarise a store: its run attributes, time step and marks (format 1.5), then a
row per layer, in the store's order (each monitor's layers in call order): monitor,
layer, steps, record shape, dims (the axis names, e.g. time,batch,channel,y,x),
dtype, encoding, units, bytes, x f32 and rate / mean. The dims and units columns
appear when some layer has them (format 1.5).

bytes is everything the layer takes in the store, metadata included. x f32 is
the float32 size of the layer's records divided by its chunk bytes (bytes less
the zarr.json metadata documents, which are a fixed few KiB a layer whatever its
length): how much smaller than float32 the data is stored. It is shown as
"small" for a layer under {MIN_RATIO_BYTES // 1024} KiB as float32, where shard and step
bookkeeping, not data, decide it.

rate / mean comes from the summaries stored beside the records (nothing is
decoded): the spike rate (spikes per element) of a spike field, "mean=" the mean
value of any other field; for a layer of tuple records (snnTorch's (spk, mem))
one entry per field, "name:value". "-" where the store has no summary.
"""


def info(path: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A summary of every monitor and layer of the store at ``path`` (a directory or a
    URL).

    Rates and means come from the stored summaries alone (nothing is decoded). A
    layer whose summary cannot be read gets ``"spike_rate": None`` and a line in
    the result's ``"warnings"``; any other error reading the store is raised. A
    ranked store (written by the ranks of a ``torch.distributed`` job) has a row
    per rank and layer, with its ``"rank"``, and its ``"ranks"`` at the top.

    ``run`` has the run's ``attrs``, ``dt``, ``time_unit`` and ``marks`` (format 1.5;
    ``{"count": marks made, "keys": {key: marks that set it}}``, empty without
    marks) and ``runs`` (format 1.7: each writer opening's ``index``, ``started``,
    own ``attrs`` and ``steps``, the most it recorded on a layer); rows come in the
    store's order (each monitor's layers in call order for format 1.5) with the
    layer's ``dims`` and ``units`` (None where unknown).

    Each row has ``bytes`` (all the layer takes, metadata included),
    ``metadata_bytes`` (its zarr.json documents; None where they cannot be measured),
    ``float32_bytes`` and ``ratio_vs_float32``: float32 bytes over chunk bytes
    (``bytes - metadata_bytes``), None for layers under :data:`MIN_RATIO_BYTES` as
    float32 (then ``ratio_note`` says why). ``fields`` has one entry per field of
    the records: its ``name``, ``encoding``, ``shape``, ``dtype`` and either
    ``spike_rate`` (spike fields) or ``mean``.
    """
    from .reader import RankedStoreReader
    from .reader import open as open_store

    layers: list[dict[str, Any]] = []
    warnings: list[str] = []
    with _warnings.catch_warnings():
        # Damaged monitors and layers are listed in "warnings" below, once each.
        _warnings.simplefilter("ignore")
        store = open_store(path, storage_options=storage_options)
        out: dict[str, Any] = {"path": str(path), "format_version": store.version}
        if isinstance(store, RankedStoreReader):
            out["ranks"] = {
                "world_size": store.world_size,
                "recorded": store.recorded,
                "present": store.ranks,
            }
            out["run"] = _run_info(store.rank(store.ranks[0])) if store.ranks else _run_info(store)
            for r in store.ranks:
                rank = store.rank(r)
                layers.extend({"rank": r, **_row(lay, warnings)} for lay in rank.layers())
                _damage(rank, warnings, f"rank {r}: ")
        else:
            out["run"] = _run_info(store)
            layers.extend(_row(lay, warnings) for lay in store.layers())
            _damage(store, warnings)
    return {**out, "layers": layers, "warnings": warnings}


def _damage(store: Any, warnings: list[str], prefix: str = "") -> None:
    """A line in ``warnings`` for every damaged monitor and layer of ``store``."""
    for name, why in store.damaged.items():
        warnings.append(f"{prefix}monitor {name!r} is damaged and left out: {why}")
    for mon in store.values():
        for name, why in mon.damaged.items():
            warnings.append(
                f"{prefix}monitor {mon.name!r}: layer {name!r} is damaged and left out: {why}"
            )


def _run_info(store: Any) -> dict[str, Any]:
    """The run's attributes, time step and marks (format 1.5; empty for older stores)."""
    attrs = getattr(store, "attrs", None)
    return {
        "attrs": dict(attrs) if isinstance(attrs, dict) else {},
        "dt": getattr(store, "dt", None),
        "time_unit": getattr(store, "time_unit", None),
        "marks": _marks_info(store),
        "runs": _runs_info(store),
    }


def _runs_info(store: Any) -> list[dict[str, Any]]:
    """Each run (format 1.7; a store before it is one run): its index, when it
    started, its own attrs, and the most steps it recorded on any layer."""
    import numpy as np

    runs = getattr(store, "runs", ())
    if not runs:
        return []
    steps = np.zeros(len(runs), dtype=np.int64)
    for layer in store.layers():
        counts = np.bincount(layer.runs()[0], minlength=len(runs))[: len(runs)]
        steps = np.maximum(steps, counts)
    return [
        {"index": r.index, "started": r.started, "attrs": r.attrs, "steps": int(n)}
        for r, n in zip(runs, steps, strict=True)
    ]


def _marks_info(store: Any) -> dict[str, Any]:
    """How many marks the run has (``writer.mark(...)`` calls) and how many of them set
    each key; empty where the store has none (or predates format 1.5)."""
    run = getattr(store, "run", None)
    entries = run.get("marks", {}).get("marks", []) if isinstance(run, dict) else []
    keys: dict[str, int] = {}
    for m in entries:
        for k in m.get("values", {}):
            keys[str(k)] = keys.get(str(k), 0) + 1
    return {"count": len(entries), "keys": keys} if entries else {}


def _metadata_bytes(layer: Any) -> int | None:
    """Bytes of the layer's zarr.json documents, or None where they cannot be measured."""
    try:
        return int(layer.nbytes_metadata())
    except (OSError, KeyError, ValueError):
        return None


def _field_names(layer: Any, n: int) -> list[str]:
    names = getattr(layer, "field_names", None)
    if isinstance(names, (list, tuple)) and len(names) == n:
        return [str(x) for x in names]
    return [str(i) for i in range(n)]


def _row(layer: Any, warnings: list[str]) -> dict[str, Any]:
    from .analysis import mean_rate
    from .format import SPIKE_ENCODING, FormatError
    from .reader import ReadError

    stored = layer.nbytes_stored()
    meta = _metadata_bytes(layer)
    f32 = layer.nbytes_float32()
    chunk = stored - meta if meta is not None else stored
    shapes = sorted({tuple(s["shape"]) for s in layer.segments})
    fields: list[dict[str, Any]] = []
    where = f"monitor {layer.monitor!r}, layer {layer.name!r}"
    flds = layer.fields
    for i, (name, fld) in enumerate(zip(_field_names(layer, len(flds)), flds, strict=True)):
        encodings = sorted({s["encoding"] for s in fld.segments})
        fshapes = sorted({tuple(s["shape"]) for s in fld.segments})
        entry: dict[str, Any] = {
            "name": name,
            "encoding": encodings,
            "shape": list(fshapes[0]) if len(fshapes) == 1 else [list(s) for s in fshapes],
            "dtype": sorted({s["dtype"] for s in fld.segments}),
        }
        spikes = encodings == [SPIKE_ENCODING]
        value = None
        if encodings:
            try:
                value = mean_rate(layer, field=i)
            except (ReadError, FormatError) as exc:
                what = "spike rate" if spikes else "mean"
                text = " ".join(str(exc).split())
                if len(flds) > 1 and not text.startswith(where):
                    text = f"{where}, field {name!r}: {text}"
                warnings.append(f"no {what}: {text}")
        entry["spike_rate" if spikes else "mean"] = value
        fields.append(entry)
    small = f32 < MIN_RATIO_BYTES
    row = {
        "monitor": layer.monitor,
        "layer": layer.name,
        "steps": len(layer),
        "structure": layer.structure,
        "shape": list(shapes[-1]) if len(shapes) == 1 else [list(s) for s in shapes],
        "dims": _as_list(getattr(layer, "dims", None)),
        "units": getattr(layer, "units", None),
        "dtype": sorted({s["dtype"] for s in layer.segments}),
        "encoding": layer.encodings,
        "bytes": stored,
        "metadata_bytes": meta,
        "float32_bytes": f32,
        "ratio_vs_float32": round(f32 / chunk, 2) if chunk > 0 and not small else None,
        "spike_rate": fields[0].get("spike_rate") if len(fields) == 1 else None,
        "fields": fields,
    }
    if small and f32:
        row["ratio_note"] = (
            f"under {MIN_RATIO_BYTES // 1024} KiB as float32: bookkeeping, not data, "
            "decides the ratio"
        )
    return row


def _as_list(value: Any) -> list[str] | None:
    return [str(x) for x in value] if isinstance(value, (list, tuple)) else None


def _number(x: float) -> str:
    return f"{x:.4g}"


def _values_cell(r: dict[str, Any]) -> str:
    cells = []
    for f in r["fields"]:
        if "spike_rate" in f:
            text = "-" if f["spike_rate"] is None else f"{f['spike_rate']:.4f}"
        else:
            text = "-" if f["mean"] is None else f"mean={_number(f['mean'])}"
        cells.append(text if len(r["fields"]) == 1 else f"{f['name']}:{text}")
    return " ".join(cells) if cells else "-"


def _shape_text(shape: list[Any]) -> str:
    if shape and isinstance(shape[0], list):
        return "|".join(_shape_text(s) for s in shape)  # several shapes over the steps
    return "x".join(map(str, shape)) if shape else "()"


def _shape_cell(r: dict[str, Any]) -> str:
    shapes = [f["shape"] for f in r["fields"]]
    if len(shapes) > 1 and any(s != shapes[0] for s in shapes):
        return " ".join(f"{f['name']}:{_shape_text(f['shape'])}" for f in r["fields"])
    return _shape_text(r["shape"])


def _ratio_cell(r: dict[str, Any]) -> str:
    if r["ratio_vs_float32"] is not None:
        return f"{r['ratio_vs_float32']:.1f}"
    return "small" if "ratio_note" in r else "-"


def _run_lines(run: dict[str, Any]) -> list[str]:
    lines = []
    if run.get("attrs"):
        text = json.dumps(run["attrs"], separators=(", ", ": "), default=str)
        if len(text) > 200:
            text = text[:197] + "... (--json shows all)"
        merged = " (every run's merged)" if len(run.get("runs", ())) > 1 else ""
        lines.append(f"attrs{merged}: {text}")
    if run.get("dt") is not None:
        unit = run.get("time_unit") or "(no unit)"
        lines.append(f"dt: {_number(run['dt'])} {unit} per time step")
    if len(run.get("runs", ())) > 1:
        lines.append(f"runs: {len(run['runs'])}")
        for r in run["runs"]:
            attrs = json.dumps(r["attrs"], separators=(", ", ": "), default=str)
            attrs = attrs if len(attrs) <= 120 else attrs[:117] + "..."
            lines.append(
                f"  run {r['index']}: {r['steps']:,} steps, started "
                f"{r['started'] or 'before runs were recorded'}, attrs {attrs}"
            )
    if run.get("marks"):
        n = run["marks"]["count"]
        keys = ", ".join(f"{k} ({c})" for k, c in run["marks"]["keys"].items())
        lines.append(f"marks: {n} mark{'s' if n != 1 else ''} setting {keys}")
    return lines


def _table(summary: dict[str, Any]) -> str:
    ranked = "ranks" in summary
    with_dims = any(r.get("dims") for r in summary["layers"])
    with_units = any(r.get("units") for r in summary["layers"])
    head = ["monitor", "layer", "steps", "shape"]
    head += ["dims"] if with_dims else []
    head += ["dtype", "encoding"] + (["units"] if with_units else [])
    head += ["bytes", "x f32", "rate / mean"]
    head = ["rank", *head] if ranked else head
    rows = [head]
    for r in summary["layers"]:
        row = [str(r["rank"])] if ranked else []
        row += [r["monitor"], r["layer"] or "''", str(r["steps"]), _shape_cell(r)]
        row += [",".join(r["dims"]) if r.get("dims") else "-"] if with_dims else []
        row += [",".join(r["dtype"]), ",".join(r["encoding"])]
        row += [r.get("units") or "-"] if with_units else []
        row += [f"{r['bytes']:,}", _ratio_cell(r), _values_cell(r)]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"{summary['path']} (spikestore format {summary['format_version']})"]
    if ranked:
        rk = summary["ranks"]
        lines[0] += f", ranks {rk['present']} of world size {rk['world_size']}" + (
            f" (recorded {rk['recorded']})" if rk["recorded"] != rk["present"] else ""
        )
    lines += _run_lines(summary.get("run", {}))
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------ arguments
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an integer from 0 to 2**63 - 1, got {text!r}"
        ) from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**63 - 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object {{...}}, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value}")
    return value


def _plain(text: str) -> str:
    """A docstring as a terminal shows it: ``literal`` markup becomes 'literal'."""
    return re.sub(r"``(.+?)``", r"'\1'", text, flags=re.S)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    debug_help = "show the traceback of a failure (also SPIKESTORE_DEBUG=1)"
    # SUPPRESS: a subcommand without --debug keeps what ``spikestore --debug`` set.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    parser = argparse.ArgumentParser(
        prog="spikestore",
        description=_plain(__doc__ or ""),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser(
        "info",
        parents=[common],
        help="summarise a store",
        description=_INFO_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_info.add_argument("path", help="the store: a folder, or a URL (s3://bucket/run)")
    p_info.add_argument("--json", action="store_true", help="machine-readable output")
    p_info.add_argument(
        "--storage-options",
        type=_json_object,
        default=None,
        help='for a URL: a JSON object, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'',
    )
    p_demo = sub.add_parser(
        "demo", parents=[common], help="record a small SNN into a store (the main job)"
    )
    p_demo.add_argument("path", nargs="?", default="demo.spikes", help="default demo.spikes")
    p_demo.add_argument("--steps", type=_positive_int, default=300, help="training steps (>= 1)")
    p_demo.add_argument(
        "--seed", type=_seed, default=0, help="random seed, 0 to 2**63 - 1 (default 0)"
    )
    p_demo.add_argument("--no-progress", action="store_true")
    existing = p_demo.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite", action="store_true", help="replace a store already at PATH"
    )
    existing.add_argument("--append", action="store_true", help="append to a store at PATH")
    p_export = sub.add_parser(
        "export",
        parents=[common],
        help="write a store as an NWB file (HDF5; needs the nwb extra)",
    )
    p_export.add_argument("path", help="the store")
    p_export.add_argument("out", help="the .nwb file to write")
    p_export.add_argument(
        "--dt",
        type=_positive_float,
        default=None,
        help="seconds per time step (default: the store's dt, else 0.001)",
    )
    p_export.add_argument("--description", default=None, help="NWB session description")
    p_export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p_view = sub.add_parser(
        "view",
        parents=[common],
        help="watch a store in the browser, live (needs the view extra)",
        description="Serve a read-only page over the store on this machine and print its "
        "URL (with a token); it follows a store that is being written. Ctrl-C stops.",
    )
    p_view.add_argument("path", help="the store: a folder, or a URL (s3://bucket/run)")
    p_view.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p_view.add_argument("--port", type=_port, default=8765, help="port (8765; 0: any free one)")
    p_view.add_argument(
        "--storage-options",
        type=_json_object,
        default=None,
        help='for a URL: a JSON object, e.g. \'{"endpoint_url": "http://127.0.0.1:9000"}\'',
    )
    return parser


# --------------------------------------------------------------------------- errors
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _os_text(exc: OSError) -> str:
    """``path: reason`` for an OSError that names its file, else its message."""
    if exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror[0].lower()}{exc.strerror[1:]}"
        return text if exc.filename2 is None else f"{text} ({exc.filename2})"
    return _one_line(exc)


def _cli_words(text: str) -> str:
    """The library's keyword advice as this command's flags."""
    for py, flag in (
        ("mode='w' (overwrite=True)", "--overwrite"),
        ("mode='a'", "--append"),
        ("mode='w'", "--overwrite"),
        ("overwrite=True", "--overwrite"),
    ):
        text = text.replace(py, flag)
    return text


def _names_output(exc: OSError, args: argparse.Namespace) -> bool:
    """Whether ``exc`` is about export's OUT (the file or its folder), not the store."""
    if not isinstance(exc.filename, (str, bytes, os.PathLike)):
        return False
    named = os.path.abspath(os.fsdecode(exc.filename))
    out = os.path.abspath(args.out)
    return named in (out, os.path.dirname(out))


def _error_line(exc: BaseException, args: argparse.Namespace) -> str:
    """One line saying what failed, where, and what to do about it."""
    from .errors import StoreLockedError, WriteError
    from .format import FormatError
    from .reader import ReadError
    from .storage import StoreExistsError

    cmd = args.command
    writing = cmd == "demo"
    if isinstance(exc, StoreExistsError):
        return (
            f"{exc.where} already exists as a spikestore store; pass --append to add to it, "
            "or --overwrite to replace it"
        )
    if isinstance(exc, StoreLockedError):
        text = _one_line(exc)
        return text if "close it" in text else f"{text}; close that writer first"
    if isinstance(exc, (FormatError, ReadError, WriteError)):
        text = _one_line(exc)
        return _cli_words(text) if writing else text
    if isinstance(exc, ImportError):
        return _one_line(exc)
    if isinstance(exc, FileExistsError):
        text = _cli_words(_os_text(exc))
        if writing and "not a spikestore store" in text:
            return f"{text}; choose a new PATH or an empty folder"
        if writing and "not a directory" in text:
            return f"{text}; choose another PATH"
        return text
    if isinstance(exc, OSError):
        text = _os_text(exc)
        no = exc.errno
        if no in (errno.EACCES, errno.EPERM, errno.EROFS):
            return text + (
                "; choose a PATH in a folder you can write to"
                if writing
                else "; check its permissions"
            )
        if no == errno.ENOTDIR:
            return f"{text}; a part of the path is a file, not a folder"
        if no == errno.ENOSPC:
            where = "OUT" if cmd == "export" else "PATH"
            return f"{text}; free some space or choose another {where}"
        if isinstance(exc, FileNotFoundError) and cmd == "export" and _names_output(exc, args):
            return f"{text}; create that folder first, or give OUT in an existing folder"
        if isinstance(exc, FileNotFoundError) and not writing:
            return f"{text}; give the folder (or URL) of a spikestore store"
        return text
    if isinstance(exc, ValueError):
        return _one_line(exc)
    return (
        f"{type(exc).__name__}: {_one_line(exc)} (unexpected; rerun with --debug for the "
        "traceback and report it)"
    )


def _debug(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get(
        "SPIKESTORE_DEBUG", ""
    ).strip() not in ("", "0")


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 failure; argument
    errors exit with status 2 through :class:`SystemExit`, as argparse does)."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader of our output went away (``spikestore info X | head``): stop
        # quietly, as a command killed by SIGPIPE does, and keep the interpreter from
        # reporting the failed flush of stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141
    except KeyboardInterrupt:
        if _debug(args):
            raise
        print("spikestore: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _debug(args):
            raise
        print(f"spikestore: error: {_safe(_error_line(exc, args))}", file=sys.stderr)
        return 1


def _safe(text: str) -> str:
    """``text`` for a terminal: control and format characters (escape sequences, bidi
    overrides) from a store's names shown escaped (``\\x1b``), never sent raw."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN and infinity (a diverging layer's mean, NaN attrs) as null,
    so ``--json`` prints strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _run(args: argparse.Namespace) -> int:
    if args.command == "info":
        summary = info(args.path, args.storage_options)
        for line in summary["warnings"]:
            print(f"spikestore: warning: {_safe(' '.join(line.split()))}", file=sys.stderr)
        if args.json:
            print(json.dumps(_finite(summary), indent=2, allow_nan=False))
        else:
            print("\n".join(_safe(line) for line in _table(summary).split("\n")))
        return 0
    if args.command == "export":
        from .export import ExportWarning, to_nwb

        with _warnings.catch_warnings(record=True) as caught:
            # Every layer left out is named on stderr, once each; other warnings
            # (a damaged layer, say) are shown as Python shows them.
            _warnings.simplefilter("always", ExportWarning)
            written = to_nwb(
                args.path,
                args.out,
                dt=args.dt,
                session_description=args.description,
                overwrite=args.overwrite,
            )
        left_out = 0
        for w in caught:
            if issubclass(w.category, ExportWarning):
                left_out += 1
                text = _safe(" ".join(str(w.message).split()))
                print(f"spikestore: warning: {text}", file=sys.stderr)
            else:
                _warnings.showwarning(w.message, w.category, w.filename, w.lineno)
        tail = f" ({left_out} left out: see the warnings above)" if left_out else ""
        print(f"wrote {written}{tail}")
        return 0
    if args.command == "view":
        from .view import serve

        serve(args.path, host=args.host, port=args.port, storage_options=args.storage_options)
        return 0
    from .demo import run

    result = run(
        args.path,
        steps=args.steps,
        seed=args.seed,
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


if __name__ == "__main__":
    raise SystemExit(main())
