"""dutlab-worker (docs/worker.md): settings in config.py, the daemon loop in daemon.py, the
helpers around one job's processes in runs.py. ``main`` is the console script.
"""

from __future__ import annotations

import logging
import logging.handlers

from .. import envfile
from .config import ConfigError, parse_args
from .daemon import Worker, log


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    # WatchedFileHandler reopens the file logrotate moved away: rotation needs no restart
    handlers = [logging.handlers.WatchedFileHandler(cfg.log_file)] if cfg.log_file else None
    logging.basicConfig(level=cfg.level, handlers=handlers, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return Worker(cfg).run()
    except (ConfigError, envfile.EnvFileError) as exc:
        log.error("%s", exc)
        return 2
    except Exception:
        log.exception("dutlab-worker failed; running jobs are left alone and re-adopted at the next start")
        return 1
