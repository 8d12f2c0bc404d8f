"""The ``multipoint`` command: one command, one sub-command per job."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence

from multipoint.settings import Settings, SettingsError, load_settings

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from multipoint.app import run_server

    if args.host:
        settings.http_host = args.host
    if args.port:
        settings.http_port = args.port
    if args.workers is not None:
        if args.workers < 0:
            print("multipoint: --workers must be 0 (every core) or more", file=sys.stderr)
            return 2
        settings.workers = args.workers
    try:
        if args.node is not None:  # validated as the variable would be
            settings = load_settings(node=args.node, http_host=settings.http_host,
                                     http_port=settings.http_port, workers=settings.workers)
        settings.check_node_database()
    except SettingsError as exc:
        print(f"multipoint: {exc}", file=sys.stderr)
        return 2
    run_server(settings)
    return 0


def _cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from scheduler.db import upgrade

    upgrade(settings.effective_database_url, args.revision)
    print(f"database at revision {args.revision}", file=sys.stderr)
    return 0


def _cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from scheduler.db import Database, upgrade
    from scheduler.seed import seed

    url = settings.effective_database_url
    upgrade(url)
    database = Database(url)
    try:
        with database.session() as session:
            report = seed(session, local_workers=args.local_workers,
                          worker_capacity_units=settings.scheduler_worker_capacity_units)
    finally:
        database.dispose()
    created = ", ".join(f"{count} {kind}" for kind, count in sorted(report.created.items()))
    print(f"seeded: {created or 'nothing new'}", file=sys.stderr)
    return 0


def _cmd_invite(args: argparse.Namespace, settings: Settings) -> int:
    from signaling.links import join_url

    if not ROOM_NAME.match(args.room):
        print(f"invalid room name {args.room!r}: use letters, digits, '-', '_', '.' "
              "(at most 64)", file=sys.stderr)
        return 2
    ttl_s = (args.hours if args.hours is not None else settings.invite_ttl_hours) * 3600
    print(join_url(settings.public_url, settings.signing_secret(), args.room, role=args.role,
                   name=args.name, ttl_s=ttl_s))
    return 0


def _cmd_user_create(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select

    from scheduler.access.users import create_local_user
    from scheduler.db import Database, upgrade
    from scheduler.errors import SchedulerError
    from scheduler.models import Organisation

    # The password comes from standard input, never the command line (which other users
    # of the machine can read in the process list): one line, or typed twice on a terminal.
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    url = settings.effective_database_url
    upgrade(url)
    database = Database(url)
    try:
        with database.session() as session:
            organisation_id = None
            if args.organisation:
                organisation_id = session.scalar(select(Organisation.id).where(
                    (Organisation.code == args.organisation)
                    | (Organisation.name == args.organisation)))
                if organisation_id is None and args.organisation.isdigit():
                    organisation_id = int(args.organisation)
                if organisation_id is None:
                    print(f"no organisation {args.organisation!r} (give its code, name or id)",
                          file=sys.stderr)
                    return 2
            user = create_local_user(session, args.name, args.role, password, organisation_id,
                                     args.email or "")
            print(f"user {user.name} ({user.role}) created; sign in at {settings.public_url}/admin",
                  file=sys.stderr)
    except SchedulerError as exc:
        print(f"multipoint: {exc.message}", file=sys.stderr)
        return 2
    finally:
        database.dispose()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multipoint", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the whole service in one process")
    serve.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP listen port (default 8080)")
    serve.add_argument("--workers", type=int,
                       help="media worker processes (default MULTIPOINT_WORKERS, 0 = every core)")
    serve.add_argument("--node", help="this node's name among several sharing one PostgreSQL "
                       "database (default MULTIPOINT_NODE; none: the single node 'local')")
    serve.set_defaults(handler=_cmd_serve)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_commands.add_parser("upgrade", help="apply schema migrations (Alembic)")
    db_upgrade.add_argument("revision", nargs="?", default="head")
    db_upgrade.set_defaults(handler=_cmd_db_upgrade)

    seed = commands.add_parser("seed", help="load regions, ORP, central bodies, IZS "
                               "components, default shares and a local media node (idempotent)")
    seed.add_argument("--local-workers", type=int, default=os.cpu_count() or 1,
                      help="workers of the 'local' media node if no node exists "
                           "(default: one per CPU core; 0: none)")
    seed.set_defaults(handler=_cmd_seed)

    invite = commands.add_parser("invite", help="print a join link for a room")
    invite.add_argument("room")
    invite.add_argument("--role", choices=["host", "guest"], default="host")
    invite.add_argument("--name", help="display name to put in the link")
    invite.add_argument("--hours", type=float, help="validity (default MULTIPOINT_INVITE_TTL_HOURS)")
    invite.set_defaults(handler=_cmd_invite)

    user = commands.add_parser("user", help="local accounts of the admin web")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    user_create = user_commands.add_parser(
        "create", help="create an account; the password is read from standard input")
    user_create.add_argument("name")
    user_create.add_argument("--role", required=True,
                             choices=["operator", "org_admin", "izs_operator", "coordinator"])
    user_create.add_argument("--organisation", help="code, name or id of the organisation "
                             "(needed for org_admin and izs_operator)")
    user_create.add_argument("--email")
    user_create.set_defaults(handler=_cmd_user_create)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"multipoint: {exc}", file=sys.stderr)
        return 2
    return int(args.handler(args, settings))


if __name__ == "__main__":
    raise SystemExit(main())
