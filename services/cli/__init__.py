"""``refund-ledger``: the one console entry point (up, run, simulate, token, check-event, verify)."""

from __future__ import annotations

import argparse
import sys

from services.cli.processes import SERVICES
from services.kit.auth import ROLES
from services.kit.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refund-ledger", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the whole stack on this machine")
    up.add_argument("--no-demo", action="store_true", help="do not publish demo traffic")
    up.add_argument("--demo-rate", type=float, default=5.0, help="demo events per second (default 5)")

    run = commands.add_parser("run", help="run one service (how Kubernetes runs it)")
    run.add_argument("service", choices=SERVICES)

    simulate = commands.add_parser("simulate", help="publish realistic scenario traffic")
    simulate.add_argument("--rate", type=float, default=100.0, help="events per second (0 = as fast as possible)")
    simulate.add_argument("--duration", type=float, default=None, help="seconds to run")
    simulate.add_argument("--count", type=int, default=None, help="events to publish")
    simulate.add_argument("--seed", type=int, default=None, help="random seed (same seed, same traffic)")
    simulate.add_argument("--no-progress", action="store_true", help="no progress bar")

    token = commands.add_parser("token", help="print a bearer token for the audit API")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--subject", default="cli")
    token.add_argument("--ttl", type=int, default=None, help="seconds the token is valid")

    check = commands.add_parser("check-event", help="validate partner events without sending them")
    check.add_argument("file", help="file with one CloudEvent per line, or - for stdin")
    check.add_argument("--topic", default=None, help="the topic the events are meant for")

    verify = commands.add_parser("verify", help="recompute the event stores' hash chains and digests")
    verify.add_argument("--schema", action="append", default=None,
                        help="a service schema to verify (repeatable; default: payments visas refunds notifier)")
    rebuild = commands.add_parser("rebuild-read-model",
                                  help="drop the audit read model and rebuild it from the event stores")
    rebuild.add_argument("--service", action="append", choices=[s for s in SERVICES if s != "audit"],
                         help="replay only this service's store (repeatable; default: all, in order)")
    rebuild.add_argument("--keep", action="store_true", help="do not drop the tables first (replay is idempotent)")
    return parser


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from services.cli.stack import up
    return up(settings, demo=not args.no_demo, demo_rate=args.demo_rate)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from services.cli.stack import run_service
    return run_service(settings, args.service)


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from services.cli.simulate import simulate_command
    return simulate_command(settings, rate=args.rate, duration=args.duration, count=args.count,
                            seed=args.seed, progress=not args.no_progress)


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from services.kit.auth import issue_token
    settings.require("audit_api_secret")
    print(issue_token(settings.audit_api_secret, args.role, args.subject, args.ttl or settings.token_ttl_seconds))
    return 0


def _check_event(settings: Settings, args: argparse.Namespace) -> int:
    from services.cli.check import check_events
    return check_events(settings, args.file, args.topic)


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    from services.cli.verify import verify_command
    return verify_command(settings, args.schema)


def _rebuild_read_model(settings: Settings, args: argparse.Namespace) -> int:
    from services.cli.read_model import rebuild_command
    return rebuild_command(settings, services=args.service, keep=args.keep)


COMMANDS = {"up": _up, "run": _run, "simulate": _simulate, "token": _token, "check-event": _check_event,
            "verify": _verify, "rebuild-read-model": _rebuild_read_model}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](Settings.from_env(), args)
    except (SettingsError, ValueError) as error:
        print(f"refund-ledger: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
