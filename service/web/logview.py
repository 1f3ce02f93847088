"""The job log as the log viewer shows it: numbered records with time, level and message text."""

from __future__ import annotations

import json
from dataclasses import dataclass

import yaml

from ..logstore import JobFolder

#: lines drawn into the page at once; a longer log shows its tail, and all of it on request
PAGE_LINES = 10000
#: lines one follow request returns at most
FOLLOW_LINES = 5000
#: the levels dutlab-run writes, in the order the filter lists them
LEVELS = ("info", "debug", "target", "input", "feedback", "results", "warning", "error", "exception")


@dataclass
class Line:
    n: int
    dt: str
    lvl: str
    msg: str

    def as_list(self) -> list:
        return [self.n, self.dt, self.lvl, self.msg]


def _text(msg: object) -> str:
    if isinstance(msg, str):
        return msg
    return json.dumps(msg, sort_keys=False, default=str)


def parse(text: str, start: int) -> list[Line]:
    """Records of output.yaml text (one `- {json}` per line) numbered from `start`."""
    out = []
    for offset, raw in enumerate(text.splitlines()):
        body = raw[2:] if raw.startswith("- ") else raw
        try:
            record = json.loads(body)
        except ValueError:
            try:  # a line written as YAML by hand (older tools) still shows
                record = yaml.safe_load(body)
            except yaml.YAMLError:
                record = None
        if not isinstance(record, dict):
            record = {"dt": "", "lvl": "info", "msg": body}
        lvl = str(record.get("lvl", "info"))
        out.append(Line(start + offset, str(record.get("dt", ""))[:23], lvl if lvl.isidentifier() else "info",
                        _text(record.get("msg", ""))))
    return out


def read(folder: JobFolder, start: int, limit: int) -> tuple[list[Line], int]:
    """Up to `limit` lines from `start`, and the line count stored."""
    count = folder.line_count()
    start = max(0, min(start, count))
    end = min(count, start + limit)
    return parse(folder.read_lines(start, end), start), count
