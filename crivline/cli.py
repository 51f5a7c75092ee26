"""The ``crivline`` command: one subcommand per part of the system.

::

    crivline up [--data-dir DIR]          the whole stack on this machine
    crivline migrate [--roles]            apply the central schema's migrations (and the
                                          parts' login roles)
    crivline tenant create KEY [--name] [--plan TIER]
                                          a tenant and its first management token
    crivline tenant plan KEY TIER         put a tenant on a plan by hand (no Stripe)
    crivline edge create EDGE_ID          a credential for an edge to report usage
    crivline export --environment T/P/E…  environments as a snapshot file, on stdout
    crivline status [--json]              each environment's version at Postgres, in the
                                          edge's Redis and at each proxy process
    crivline control | syncd | proxy      run one part (when this build has it)
    crivline proxy --bootstrap FILE…      … serving those files when nothing newer is there
    crivline relay                        republish the primary's notifications on the bus

Settings come from ``CRIVLINE_*`` variables; flags override them. Deliberate failures
(bad settings, a port in use, an unreachable database …) print one line and exit 1;
a usage error exits 2. Nothing prints a traceback at an operator.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from crivline.errors import ConfigError, CrivlineError
from crivline.settings import Settings, redact_url

PARTS = ("control", "syncd", "proxy", "relay")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crivline", description="Crivline Edge")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run the whole stack on this machine")
    up.add_argument("--data-dir", help="where embedded servers keep data (default .crivline)")

    migrate = sub.add_parser("migrate", help="apply the central schema's migrations")
    migrate.add_argument(
        "--roles", action="store_true",
        help="also create or update each part's login role from its CRIVLINE_<PART>_DATABASE_URL",
    )  # fmt: skip

    tenant = sub.add_parser("tenant", help="tenant bootstrap")
    tenant_sub = tenant.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    create = tenant_sub.add_parser("create", help="create a tenant and a management token")
    create.add_argument("key", help="tenant key: lowercase letters, digits and dashes")
    create.add_argument("--name", help="display name (default: the key)")
    create.add_argument("--plan", default="free", help="plan tier (default: free)")
    plan = tenant_sub.add_parser("plan", help="put a tenant on a plan (free, pro, enterprise)")
    plan.add_argument("key", help="tenant key")
    plan.add_argument("tier", help="plan tier")

    edge = sub.add_parser("edge", help="edge credentials")
    edge_sub = edge.add_subparsers(dest="edge_command", required=True, metavar="ACTION")
    edge_create = edge_sub.add_parser("create", help="a credential for an edge's usage reports")
    edge_create.add_argument("edge_id", help="the edge's CRIVLINE_EDGE_ID")

    export = sub.add_parser("export", help="environments as a snapshot file (stdout)")
    export.add_argument(
        "--environment",
        action="append",
        required=True,
        dest="environments",
        metavar="TENANT/PROJECT/ENV",
        help="an environment by its keys or its id (repeat for more)",
    )

    status = sub.add_parser(
        "status", help="versions at Postgres, in the edge Redis and at each proxy process"
    )
    status.add_argument("--json", action="store_true", help="the report as JSON")
    status.add_argument("--tenant", dest="scope_tenant", metavar="KEY", help="only this tenant")
    status.add_argument("--project", dest="scope_project", metavar="KEY", help="only this project")
    status.add_argument(
        "--environment", dest="scope_environment", metavar="KEY", help="only this environment"
    )

    control = sub.add_parser("control", help="run the control API")
    control.add_argument("--port", type=int, dest="control_port")

    syncd = sub.add_parser("syncd", help="run the sync daemon beside an edge")
    syncd.add_argument("--port", type=int, dest="syncd_port")
    syncd.add_argument("--tenant", dest="scope_tenant", help="only this tenant (key)")
    syncd.add_argument("--project", dest="scope_project", help="only this project (key)")
    syncd.add_argument("--environment", dest="scope_environment", help="only this environment")

    sub.add_parser("relay", help="republish the primary's change notifications on the bus")

    proxy = sub.add_parser("proxy", help="run the edge proxy")
    proxy.add_argument("--port", type=int, dest="proxy_port")
    proxy.add_argument("--workers", type=int, dest="proxy_workers", help="processes on one port")
    proxy.add_argument(
        "--bootstrap",
        nargs="+",
        metavar="FILE",
        help="snapshot files (crivline export) to serve when nothing newer is there",
    )
    return parser


_SETTINGS_FLAGS = (
    "data_dir", "control_port", "syncd_port", "proxy_port", "proxy_workers",
    "scope_tenant", "scope_project", "scope_environment",
)  # fmt: skip


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in _SETTINGS_FLAGS
        if getattr(args, name, None) is not None
    }
    if getattr(args, "bootstrap", None):
        overrides["bootstrap"] = os.pathsep.join(args.bootstrap)
    return Settings.from_env(**overrides)


def _cmd_up(settings: Settings, _args: argparse.Namespace) -> int:
    from crivline.up import Stack

    return Stack(settings).run()


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from crivline.roles import GROUPS
    from crivline.up import _migrate

    url = settings.require_database()
    parts = [p for p in GROUPS if getattr(settings, f"{p}_database_url") is not None]
    if args.roles and not parts:
        raise ConfigError(
            "--roles needs at least one of "
            + ", ".join(f"CRIVLINE_{p.upper()}_DATABASE_URL" for p in GROUPS)
        )
    applied = asyncio.run(_migrate(url, settings if args.roles else None))
    shown = ", ".join(applied) if applied else "nothing to apply, schema is up to date"
    print(f"migrated {redact_url(url)}: {shown}")
    if args.roles:
        for part in parts:
            login = redact_url(getattr(settings, f"{part}_database_url").reveal())
            print(f"  {part}: login {login} is a member of {GROUPS[part]}")
    return 0


def _cmd_tenant(settings: Settings, args: argparse.Namespace) -> int:
    from crivline.seed import create_tenant, set_plan
    from crivline.up import _connect

    async def create() -> int:
        conn = await _connect(settings.require_database())
        try:
            tenant = await create_tenant(conn, args.key, args.name, args.plan)
        finally:
            await conn.close()
        print(f"tenant {tenant.key} created on the {args.plan} plan")
        print(f"  id                {tenant.id}")
        print(f"  management token  {tenant.token}")
        print("  (the token is shown only now; only its hash is stored)")
        return 0

    async def plan() -> int:
        conn = await _connect(settings.require_database())
        try:
            change = await set_plan(conn, args.key, args.tier, actor="cli:tenant-plan")
        finally:
            await conn.close()
        if change.changed:
            print(f"tenant {change.tenant}: plan {change.before} -> {change.after}")
        else:
            print(f"tenant {change.tenant} is already on the {change.after} plan")
        return 0

    return asyncio.run(create() if args.tenant_command == "create" else plan())


def _cmd_edge(settings: Settings, args: argparse.Namespace) -> int:
    from crivline.seed import issue_edge_credential
    from crivline.up import _connect

    async def create() -> int:
        conn = await _connect(settings.require_database())
        try:
            secret = await issue_edge_credential(conn, args.edge_id)
        finally:
            await conn.close()
        print(f"edge credential for {args.edge_id}: {secret}")
        print("  (set it as CRIVLINE_EDGE_CREDENTIAL for that edge's syncd; shown only now)")
        return 0

    return asyncio.run(create())


def _cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from crivline.export import export
    from crivline.up import _connect

    async def run() -> bytes:
        conn = await _connect(settings.require_database())
        try:
            return await export(conn, args.environments)
        finally:
            await conn.close()

    document = asyncio.run(run())
    sys.stdout.buffer.write(document)
    sys.stdout.buffer.flush()
    return 0


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from crivline.edgestatus import Scope, gather, render
    from crivline.errors import StartupError
    from crivline.keyspace import Keyspace
    from crivline.up import _connect

    async def run() -> dict[str, Any]:
        redis_url = settings.require_redis()
        conn = await _connect(settings.require_database())
        redis = Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5)
        try:
            return await gather(
                conn,
                redis,
                Keyspace(settings.key_prefix, settings.edge_id),
                Scope(settings.scope_tenant, settings.scope_project, settings.scope_environment),
            )
        except (RedisError, OSError) as exc:
            raise StartupError(
                f"cannot read the edge Redis {redact_url(redis_url)}: {exc}"
            ) from None
        finally:
            await conn.close()
            await redis.aclose()

    report = asyncio.run(run())
    if args.json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.buffer.flush()
    else:
        print(render(report), end="")
    return 0


def _cmd_part(part: str) -> Callable[[Settings, argparse.Namespace], int]:
    def run(settings: Settings, _args: argparse.Namespace) -> int:
        try:
            module = importlib.import_module(f"{part}.main")
        except ModuleNotFoundError as exc:
            if exc.name != f"{part}.main":
                raise
            raise CrivlineError(f"this build of Crivline has no {part} yet") from None
        result: int = module.run(settings)
        return result

    return run


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "up": _cmd_up,
    "migrate": _cmd_migrate,
    "tenant": _cmd_tenant,
    "edge": _cmd_edge,
    "export": _cmd_export,
    "status": _cmd_status,
    **{part: _cmd_part(part) for part in PARTS},
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        return COMMANDS[args.command](settings, args)
    except CrivlineError as exc:
        print(f"crivline {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
