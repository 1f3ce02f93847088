"""`dutlab-server`: serve, consumer, migrate, manage (admin verbs), version.

This is huey's "main" module: it imports `tasks`, which registers the tasks on the queue and
subscribes the scheduling pass to the domain's events, so every command here that changes
state (serve, consumer, manage, restore) asks for passes (events.py has the rule).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading

from peewee import DatabaseError

from . import __version__, accesslog, filemodes, manage, migrations, queue, tasks, wakeups
from .backup.archive import BackupError
from .backup.create import create_backup
from .backup.restore import restore
from .config import ConfigError, Settings, config_path, load
from .db import connection, database, open_database


def _settings(args: argparse.Namespace) -> Settings:
    try:
        settings = load(args.config)
    except ConfigError as exc:
        sys.exit(f"dutlab-server: configuration error: {exc}")
    os.environ["DUTLAB_CONFIG"] = config_path(args.config)  # child processes read the same file
    return settings


def _open(settings: Settings, *, need_schema: bool = True) -> None:
    filemodes.prepare(settings)  # SQLite files are created 0600, whatever the umask
    open_database(settings.database)
    queue.configure(settings)
    if need_schema and migrations.current_version() < migrations.latest_version():
        sys.exit(f"dutlab-server: the database {settings.database} is at schema version "
                 f"{migrations.current_version()} of {migrations.latest_version()}; run 'dutlab-server migrate'")


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _open(settings, need_schema=False)
    applied = migrations.migrate()
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import bind, supervise

    settings = _settings(args)
    if args.listen:
        settings.listen = args.listen
    if args.processes is not None:
        if args.processes < 1:
            sys.exit("dutlab-server serve: --processes must be 1 or more")
        settings.processes = args.processes
    problem = settings.processes_problem()
    if problem:
        sys.exit(f"dutlab-server: configuration error: {problem}")
    if args.migrate:
        cmd_migrate(args)
    if settings.processes == 1:
        return _serve(args, settings)
    _open(settings)  # the schema check once, here; each child opens its own connections
    database.close()
    settings.secret_key()  # made once: children racing to create it would fail
    filemodes.warn_broad_files(settings)
    host, port = settings.host_port
    try:
        sock = bind(host, port, settings.listen_backlog)
    except OSError as exc:
        sys.exit(f"dutlab-server: cannot listen on {settings.listen}: {exc}")
    logging.getLogger("dutlab.server").info("listening on http://%s:%s", host, port)
    return supervise(settings.processes, sock, lambda sock: _serve(args, settings, sock))


def _serve(args: argparse.Namespace, settings: Settings, sock: socket.socket | None = None) -> int:
    """Serve in this process: on its own socket, or on `sock` shared with other server processes."""
    from cheroot import wsgi  # the web stack loads only for `serve`

    from .app import make_app
    from .limits import release_memory_after_bursts, server_body_cap
    from .serve import serve_until_signalled

    _open(settings)
    settings.secret_key()
    if sock is None:
        filemodes.warn_broad_files(settings)
    host, port = settings.host_port
    release_memory_after_bursts()
    if settings.longpoll_notify:
        wakeups.listen()  # the consumer's passes wake this process's long-polls
    if args.access_log:
        accesslog.send_access_log_to(args.access_log)
    app = make_app(settings) if args.no_access_log else accesslog.AccessLog(make_app(settings))
    # the backlog queues a burst of connections instead of resetting them (cheroot's default is 5)
    server = wsgi.Server((host, port), app, numthreads=settings.threads,
                         server_name="dutlab", shutdown_timeout=1, request_queue_size=settings.listen_backlog)
    server.max_request_body_size = server_body_cap(settings)
    if sock is None:
        logging.getLogger("dutlab.server").info("listening on http://%s:%s", host, port)
        try:
            serve_until_signalled(server)
        except OSError as exc:
            sys.exit(f"dutlab-server: cannot listen on {settings.listen}: {exc}")
        return 0
    server.bind = lambda family, type, proto=0: setattr(server, "socket", sock)  # the inherited socket
    # non-blocking: of the processes woken for one connection, those that lose the accept() go
    # back to their loop at once (with cheroot's 1 s timeout they would sit in accept())
    serve_until_signalled(server, before_serving=lambda: sock.settimeout(0))
    return 0


def cmd_consumer(args: argparse.Namespace) -> int:
    """Run the queue consumer plus the repair sweep (a pass every `scheduler_sweep` seconds)."""
    settings = _settings(args)
    _open(settings)
    # poll the queue often: a submission must reach the scheduler in milliseconds, not seconds
    consumer = queue.huey.create_consumer(workers=args.workers, worker_type="thread", initial_delay=0.005,
                                    backoff=1.1, max_delay=0.05, periodic=True, check_worker_health=True)
    stop = threading.Event()

    def sweep() -> None:
        while not stop.wait(settings.scheduler_sweep):
            tasks.schedule_pass("sweep")

    threading.Thread(target=sweep, name="sweep", daemon=True).start()
    tasks.schedule_pass("consumer start")
    tasks.notify_tasks.repair()  # what a stopped consumer left unsent goes out now, not in a minute
    tasks.check_playbook_schedules()  # a schedule due right now runs now, not at the next minute
    try:
        consumer.run()
    finally:
        stop.set()
    return 0


def cmd_manage(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _open(settings)
    return manage.run(args, settings)


def cmd_backup(args: argparse.Namespace) -> int:
    """Write one archive; its path is the last line of stdout (playbooks read it)."""
    settings = _settings(args)
    _open(settings)
    try:
        with connection():
            path = create_backup(settings, config_path(args.config), args.output)
    except BackupError as exc:
        sys.exit(f"dutlab-server backup: {exc}")
    print(path)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _open(settings, need_schema=False)
    try:
        restore(args.archive, settings, config_path(args.config), force=args.force)
    except BackupError as exc:
        sys.exit(f"dutlab-server restore: refused: {exc}")
    except DatabaseError as exc:
        sys.exit(f"dutlab-server restore: database {settings.database.split('@')[-1]}: {exc}")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(__version__)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dutlab-server", description="the dutlab lab server")
    parser.add_argument("--config", help="settings file (default $DUTLAB_CONFIG or /etc/dutlab/server.yaml)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-file", metavar="FILE",
                        help="log into FILE instead of stderr (reopened when logrotate moves it)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="serve the REST API, XML-RPC, dashboard and worker API")
    p.add_argument("--listen", help="host:port (overrides the settings file)")
    p.add_argument("--migrate", action="store_true", help="apply pending migrations first")
    p.add_argument("--access-log", metavar="FILE",
                   help="one line per request into FILE (default: into the server log, logger dutlab.access)")
    p.add_argument("--no-access-log", action="store_true", help="no line per request")
    p.add_argument("--processes", type=int, metavar="N",
                   help="N server processes on one listening socket (PostgreSQL + Redis only; "
                        "overrides the settings file's processes, default 1)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("consumer", help="run the task queue consumer (scheduler, health checks, sweeps)")
    p.add_argument("-w", "--workers", type=int, default=2)
    p.set_defaults(func=cmd_consumer)
    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("version", help="print the dutlab version").set_defaults(func=cmd_version)
    p = sub.add_parser("backup", help="write one archive: database dump, settings, admin config, job outputs")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="archive path (default DATA_DIR/backups/dutlab-backup-<UTC time>.tar.gz)")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="restore a backup into this (fresh, stopped) install")
    p.add_argument("archive")
    p.add_argument("--force", action="store_true",
                   help="replace the data of a non-empty install (and skip the server-running check)")
    p.set_defaults(func=cmd_restore)
    p = sub.add_parser("manage", help="admin commands: users, groups, tokens, devices, device-types, workers")
    manage.add_arguments(p)
    p.set_defaults(func=cmd_manage)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = [accesslog.file_handler(args.log_file)] if args.log_file else None
    logging.basicConfig(level=args.log_level, format=accesslog.LOG_FORMAT, handlers=handlers)
    filemodes.narrow_umask()  # as the systemd unit's UMask=0027, for servers started by hand
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
