"""Render a collection role's own template outside Ansible, so a lab runs the config the role writes.

The emulated board lab starts private copies of ser2net, dnsmasq and pdudaemon. Their
configuration comes from the templates of dutlab.lab.ser2net, .dhcp, .tftp and .pdudaemon with the
role's defaults underneath, so a test of the lab is also a test that the roles' files work with
the real daemons. Only the few Ansible filters those templates use are provided here.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "collection" / "roles"
MANAGED = "Written by the dutlab emulated board lab from this role template"


def _comment(text: str) -> str:
    return "\n".join(f"# {line}" if line else "#" for line in str(text).splitlines())


def _bool(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "1", "true")
    return bool(value)


def _combine(*dicts: dict) -> dict:
    out: dict = {}
    for d in dicts:
        out.update(d or {})
    return out


def _environment(role: str) -> jinja2.Environment:
    # Ansible's template module: trim_blocks on, undefined variables are errors
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLES / role / "templates")),
                             trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(comment=_comment, bool=_bool, combine=_combine,
                       to_json=lambda v, **kw: json.dumps(v, **kw),
                       to_nice_json=lambda v, indent=4, **kw: json.dumps(v, indent=indent, sort_keys=True, **kw))
    return env


def role_defaults(role: str) -> dict:
    return yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {}


def render(role: str, template: str, **variables) -> str:
    """`role`'s templates/`template` with its defaults overlaid by `variables`."""
    context = {"ansible_managed": MANAGED, **role_defaults(role), **variables}
    return _environment(role).get_template(template).render(context)
