"""audio-ports command line: one task command per port plus parity, bench, convert and demo.

Each port's ``ports/<name>/cli.py`` registers its task commands and imports its framework (mlx,
torch, max) only when a command runs, so ``ports --help`` stays fast. ``parity``, ``bench`` and
``demo`` come from the separate harness package ``ports_parity``, which needs the originals.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path
from types import ModuleType

PORTS = ("pyannote_mlx", "s3gen", "orca_v1", "whisper_max")


def port_module(name: str) -> ModuleType | None:
    """The port's cli module, or None when that port is not part of this install."""
    try:
        return importlib.import_module(f"ports.{name}.cli")
    except ModuleNotFoundError as err:
        if err.name in (f"ports.{name}", f"ports.{name}.cli"):
            return None
        raise


def available() -> dict[str, ModuleType]:
    return {n: m for n in PORTS if (m := port_module(n)) is not None}


def _selected(name: str | None) -> list[str]:
    ports = available()
    if name is not None:
        if name not in ports:
            raise SystemExit(f"port {name} is not installed")
        return [name]
    if not ports:
        print("no ports installed")
    return list(ports)


def _write_json(obj, path: str | None, suffix: str, name: str, many: bool):
    if path is None:
        return
    p = Path(path)
    if many:  # one file per port beside the given name
        p = p.with_name(f"{p.stem}-{name}{p.suffix or suffix}")
    obj.to_json(p)
    print(f"wrote {p}")


def _harnesses(names: list[str], command: str):
    """(name, harness module) for each port whose originals are installed; a one-line error for
    each port whose are not. Returns (pairs, all_available)."""
    from ports_parity import HarnessUnavailable, harness

    out, ok = [], True
    for name in names:
        try:
            out.append((name, harness(name)))
        except HarnessUnavailable as err:
            print(f"ports {command}: error: {err}", file=sys.stderr)
            ok = False
    return out, ok


def cmd_parity(args) -> int:
    names = _selected(args.port)
    pairs, ok = _harnesses(names, "parity")
    for name, h in pairs:
        report = h.run_parity(quick=args.quick)
        print(report.table())
        print()
        _write_json(report, args.json, ".json", name, len(names) > 1)
        ok &= report.passed
    return 0 if ok else 1


def cmd_bench(args) -> int:
    names = _selected(args.port)
    pairs, ok = _harnesses(names, "bench")
    for name, h in pairs:
        if args.in_process:
            report = h.run_bench(quick=args.quick)
        else:
            from ports_parity.common.bench import run_isolated

            report = run_isolated(name, quick=args.quick)
        print(report.table())
        print()
        _write_json(report, args.json, ".json", name, len(names) > 1)
    return 0 if ok else 1


def cmd_convert(args) -> int:
    mod = port_module(args.port)
    if mod is None:
        raise SystemExit(f"port {args.port} is not installed")
    mod.convert(args.src, args.dst)
    print(f"wrote {args.dst}")
    return 0


def cmd_demo(args) -> int:
    out = Path(args.out)
    pairs, ok = _harnesses(_selected(None), "demo")
    for name, h in pairs:
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        print(f"== {name} -> {d}")
        try:
            report = h.demo(d)
        except Exception:  # one broken port must not hide the others' results
            traceback.print_exc()
            ok = False
            continue
        if report is not None:
            print(report.table())
            report.to_json(d / "parity.json")
            ok &= report.passed
        print()
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ports", description=__doc__.splitlines()[0])
    ap.add_argument("--debug", action="store_true",
                    help="show the full traceback of any error (also accepted after a command)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for mod in available().values():
        mod.register(sub)
    from ports.batch.cli import register as register_batch  # light: no framework imports

    register_batch(sub)

    p = sub.add_parser("parity", help="compare a port (or all) with its installed original")
    p.add_argument("port", nargs="?", choices=PORTS)
    p.add_argument("--json", metavar="F", help="write the report as JSON")
    p.add_argument("--quick", action="store_true", help="smaller inputs")
    p.set_defaults(func=cmd_parity)

    p = sub.add_parser("bench", help="time a port (or all) against its original, as ratios")
    p.add_argument("port", nargs="?", choices=PORTS)
    p.add_argument("--json", metavar="F", help="write results as JSON (and a PNG chart beside)")
    p.add_argument("--quick", action="store_true", help="small cases only")
    p.add_argument("--in-process", action="store_true",
                   help="time both sides alternately in this process (default: each side in a "
                   "fresh process of its own)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("convert", help="convert an original checkpoint to the port's weights")
    p.add_argument("port", choices=PORTS)
    p.add_argument("src", help="original checkpoint file or folder")
    p.add_argument("dst", help="output file (safetensors)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="run every installed port on generated audio, with parity")
    p.add_argument("--out", default="out", help="output folder (default: out/)")
    p.set_defaults(func=cmd_demo)

    # `ports segment x.wav --debug` as well as `ports --debug segment x.wav`; SUPPRESS keeps the
    # top-level value when the flag is not repeated after the command.
    for p in sub.choices.values():
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of any error")
    return ap


def _user_errors() -> tuple[type[BaseException], ...]:
    from ports.common.errors import UserError
    from ports.common.unpickle import UnsafePickleError

    # ValueError covers bad input (AudioError, ConversionError), FileNotFoundError missing files
    # and model sources (ModelSourceError). Anything else is a bug: it keeps its traceback.
    return (ValueError, FileNotFoundError, UnsafePickleError, UserError)


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except _user_errors() as err:
        if args.debug:
            raise
        print(f"ports {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
