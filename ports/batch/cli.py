"""``ports batch {detect,segment,transcribe} INPUT... --out DIR``."""
from __future__ import annotations

import sys

from .tasks import TASKS


def register(sub) -> None:
    p = sub.add_parser(
        "batch", help="run detect/segment/transcribe over many inputs (local or Ray)",
        description="Inputs are files, folders (searched recursively for audio files and HLS "
        "playlists), globs, or --manifest; each may be a path or an fsspec URL (s3://bucket/"
        "prefix/, gs://..., with that protocol's fsspec package installed on every worker). Each input's outputs go to OUT under its relative "
        "path, in the single-file command's formats; OUT/results.parquet has one row per unit "
        "of work (a minute for detect, a file otherwise). Exit 0 when every input succeeded.")
    p.add_argument("task", choices=TASKS)
    p.add_argument("inputs", nargs="*", metavar="INPUT")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--manifest", metavar="F", help="one path or URL per line, or CSV with a path column "
                   "(relative entries: relative to the manifest)")
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="existing Ray cluster (e.g. ray://head:10001 or auto); default: start a "
                   "local one")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray actors (default: cluster CPUs - 1)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="Ray CPUs reserved per actor (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch/BLAS threads: local process, or per Ray actor (default: "
                   "--cpus-per-worker). Scores are bit-identical at equal thread counts only")
    p.add_argument("--model", default=None, help="as the single-file command's --model")
    p.add_argument("--resume", action="store_true",
                   help="skip units already done in OUT (after a crash or kill)")
    p.add_argument("--source-guid", default="", help="detect: hydrophone id for OrcaHello JSON")
    p.add_argument("--language", default=None, help="transcribe: spoken language")
    p.add_argument("--task-class", default=None, help=argparse_suppress())
    p.set_defaults(func=cmd_batch)


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def cmd_batch(args) -> int:
    from .inputs import expand
    from .runner import local_engine, run_job
    from .tasks import make_task

    if not args.inputs and not args.manifest:
        raise ValueError("no inputs: give INPUT paths or --manifest")
    sources = expand(args.inputs, args.manifest)  # a missing manifest fails here, up front
    opts = {"source_guid": args.source_guid} if args.task == "detect" else \
        {"language": args.language} if args.task == "transcribe" else {}
    task = make_task(args.task_class or args.task, args.model, opts)
    if args.engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            from ports.common.errors import UserError

            raise UserError("--engine ray needs Ray: pip install 'audio-ports[scale]'") from None
        from .ray_engine import ray_engine_factory

        engine = ray_engine_factory(address=args.ray_address, workers=args.workers,
                                    cpus_per_worker=args.cpus_per_worker, threads=args.threads,
                                    task_spec=args.task_class)
    else:
        if args.threads:
            try:
                import torch

                torch.set_num_threads(args.threads)
            except ImportError:
                pass
        engine = local_engine
    s = run_job(task, sources, args.out, engine=engine, resume=args.resume)
    rate = f", {s.audio_s / s.seconds:.1f} s audio/s" if s.seconds > 0 and s.audio_s else ""
    print(f"batch {args.task}: {s.sources} input(s), {s.units} unit(s): ran {s.ran}, "
          f"resumed {s.skipped}; {len(s.failed_sources)} input(s) failed; "
          f"{s.seconds:.1f} s{rate} -> {args.out}")
    if s.failed_sources:
        print(f"batch {args.task}: {len(s.failed_sources)} of {s.sources} input(s) failed "
              f"(see {args.out}/results.parquet)", file=sys.stderr)
        return 1
    return 0
