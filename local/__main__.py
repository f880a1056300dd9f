"""``python -m local run|invoke``: the embedded runtime's command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from local.runtime import Runtime, RuntimeOptions
from local.template import project_root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description="Herald's embedded runtime")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve the API and run every function against the embedded AWS")
    run.add_argument("--port", type=int, default=3000, help="API port (default 3000)")
    run.add_argument("--aws-port", type=int, default=0, help="embedded AWS (moto) port (default: any free port)")
    run.add_argument("--template", type=Path, default=project_root() / "template.yaml")
    run.add_argument(
        "--data",
        type=Path,
        default=project_root() / ".herald" / "data.json",
        help="where table data is kept between runs",
    )
    run.add_argument("--no-persist", action="store_true", help="start empty and keep nothing")
    run.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="flow delays pass this many times faster (86400: a day in a second; default 1, real time)",
    )
    invoke = commands.add_parser("invoke", help="run one function on one event, like sam local invoke")
    invoke.add_argument("function", help="logical id, function name or folder (e.g. api)")
    invoke.add_argument("event", type=Path, help="event JSON file (e.g. events/api/get-contact.json)")
    invoke.add_argument("--template", type=Path, default=project_root() / "template.yaml")
    invoke.add_argument("--data", type=Path, default=project_root() / ".herald" / "data.json")
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    return _invoke(args)


def _run(args: argparse.Namespace) -> int:
    options = RuntimeOptions(
        template_path=args.template,
        api_port=args.port,
        aws_port=args.aws_port,
        data_file=None if args.no_persist else args.data,
        time_scale=args.time_scale,
    )
    runtime = Runtime(options)
    runtime.start()
    print(runtime.banner(), flush=True)
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    print("\nStopping...", flush=True)
    saved = runtime.stop()
    if options.data_file:
        print(f"Saved {saved} items to {options.data_file}.", flush=True)
    print("Stopped.", flush=True)
    return 0


def _invoke(args: argparse.Namespace) -> int:
    options = RuntimeOptions(
        template_path=args.template, api_port=0, data_file=args.data, start_pollers=False, start_schedules=False
    )
    runtime = Runtime(options)
    runtime.start()
    try:
        event = json.loads(args.event.read_text())
        result = runtime.invoke(args.function, event)
        print(json.dumps(result, indent=2, default=str))
    finally:
        runtime.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
