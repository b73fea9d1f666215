"""audio-ports command line: one task command per port plus parity, bench, convert and demo.

Each port's ``ports/<name>/cli.py`` registers its commands; heavy frameworks are imported only
when a command runs, so ``ports --help`` stays fast.
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


def _selected(name: str | None) -> dict[str, ModuleType]:
    ports = available()
    if name is not None:
        if name not in PORTS:
            raise SystemExit(f"unknown port {name!r}; ports: {', '.join(PORTS)}")
        if name not in ports:
            raise SystemExit(f"port {name} is not installed")
        return {name: ports[name]}
    if not ports:
        print("no ports installed")
    return ports


def _write_json(obj, path: str | None, suffix: str, name: str, many: bool):
    if path is None:
        return
    p = Path(path)
    if many:  # one file per port beside the given name
        p = p.with_name(f"{p.stem}-{name}{p.suffix or suffix}")
    obj.to_json(p)
    print(f"wrote {p}")


def cmd_parity(args) -> int:
    ports = _selected(args.port)
    ok = True
    for name, mod in ports.items():
        report = mod.run_parity(quick=args.quick)
        print(report.table())
        print()
        _write_json(report, args.json, ".json", name, len(ports) > 1)
        ok &= report.passed
    return 0 if ok else 1


def cmd_bench(args) -> int:
    ports = _selected(args.port)
    for name, mod in ports.items():
        report = mod.run_bench(quick=args.quick)
        print(report.table())
        print()
        _write_json(report, args.json, ".json", name, len(ports) > 1)
    return 0


def cmd_convert(args) -> int:
    mod = _selected(args.port)[args.port]
    mod.convert(args.src, args.dst)
    print(f"wrote {args.dst}")
    return 0


def cmd_demo(args) -> int:
    ports = _selected(None)
    out = Path(args.out)
    ok = True
    for name, mod in ports.items():
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        print(f"== {name} -> {d}")
        try:
            report = mod.demo(d)
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
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    mods = available()
    for mod in mods.values():
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
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("convert", help="convert an original checkpoint to the port's weights")
    p.add_argument("port", choices=PORTS)
    p.add_argument("src", help="original checkpoint file or folder")
    p.add_argument("dst", help="output file (safetensors)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="run every installed port on generated audio, with parity")
    p.add_argument("--out", default="out", help="output folder (default: out/)")
    p.set_defaults(func=cmd_demo)
    return ap


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
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # Expected user-facing failures (bad audio, missing weights): one clear line, no trace.
        if getattr(args, "debug", False):
            raise
        print(f"ports {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
