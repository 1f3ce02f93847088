"""`manage device-types|devices|device-tags ...`: device types, devices and their tags."""

from __future__ import annotations

import argparse
import sys

from .. import devicecfg
from ..config import Settings
from ..lab import device_types, devices, tags
from ..models import DeviceType
from ..states import DeviceHealth, DeviceState
from .common import actor, add_verb, add_verbs, details, emit, flag_pair, formats, given, noun, read_file

#: the choices come from the state enums (upper case, as LAVA's CLI takes them)
DEVICE_HEALTHS = tuple(h.name for h in DeviceHealth)
DEVICE_STATES = tuple(s.name for s in DeviceState)

# Device types #####################################################################

DEVICE_TYPE_COLUMNS = ["name", "template", "devices", "health_frequency", "health_denominator",
                       "disable_health_checks", "installed", "template_found"]


def _device_type_data(args: argparse.Namespace) -> dict:
    data = given(description=args.description, template=args.template, health_frequency=args.health_frequency,
                  health_denominator=args.health_denominator, disable_health_checks=args.disable_health_checks,
                  display=args.display, health_check=read_file(args.health_check))
    return data


def device_types_add(args: argparse.Namespace, settings: Settings) -> int:
    data = _device_type_data(args)
    if args.name != "*":
        dtype = device_types.create_device_type({"name": args.name, **data})
        print(f"device type '{dtype.name}' added")
        _warn_template(dtype, settings)
        return 0
    known = {d.name for d in device_types.list_device_types()}
    for template in device_types.available_templates(settings):
        if template not in known:
            device_types.create_device_type({"name": template, **data})
            print(f"device type '{template}' added")
    return 0


def _warn_template(dtype: DeviceType, settings: Settings) -> None:
    if not device_types.device_type_json(dtype, settings)["template_found"]:
        where = ", ".join(str(p) for p in devicecfg.device_search_path(settings))
        print(f"warning: no template '{devicecfg.template_name(dtype)}.jinja2' in {where}; "
              "devices of this type cannot render until one is installed", file=sys.stderr)


def device_types_update(args: argparse.Namespace, settings: Settings) -> int:
    dtype = device_types.update_device_type(args.name, _device_type_data(args))
    print(f"device type '{args.name}' updated")
    _warn_template(dtype, settings)
    return 0


def device_types_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = [{**row, "devices": len(row["devices"]), "installed": True}
            for row in device_types.device_types_json(device_types.list_device_types(), settings, full=False)]
    if args.all:
        known = {r["name"] for r in rows}
        rows += [{"name": t, "template": t, "devices": 0, "installed": False, "template_found": True}
                 for t in device_types.available_templates(settings) if t not in known]
        rows.sort(key=lambda r: r["name"])
    emit(rows, DEVICE_TYPE_COLUMNS, args.format)
    return 0


def device_types_details(args: argparse.Namespace, settings: Settings) -> int:
    info = device_types.device_type_json(device_types.get_device_type(args.name), settings, full=False)
    _text, info["health_check"] = device_types.health_check_text(args.name, settings)
    if not args.devices:
        info["devices"] = len(info["devices"])
    details(info)
    return 0


# Devices ##########################################################################

DEVICE_COLUMNS = ["hostname", "device_type", "worker", "state", "health", "owner_user", "owner_group", "tags"]


def _owner_args(args: argparse.Namespace) -> dict:
    data = given(owner_user=args.owner, owner_group=args.group, physical_user=args.physical_user,
                  physical_group=args.physical_group)
    return {k: v or None for k, v in data.items()}


def devices_add(args: argparse.Namespace, settings: Settings) -> int:
    data = {"hostname": args.hostname, "device_type": args.device_type, "worker": args.worker,
            **given(description=args.description, dictionary=read_file(args.dictionary), tags=args.tags),
            **_owner_args(args)}
    if args.offline:
        data["health"] = "Maintenance"
    device = devices.create_device(data, settings, actor())
    print(f"device '{device.hostname}' added ({devices.device_json(device)['health']})")
    return 0


def devices_update(args: argparse.Namespace, settings: Settings) -> int:
    changes = {**given(device_type=args.device_type, worker=args.worker, description=args.description,
                        dictionary=read_file(args.dictionary), health=args.health, reason=args.reason),
               **_owner_args(args)}
    if args.no_owner:
        changes.update(owner_user=None, owner_group=None)
    device = devices.update_device(args.hostname, changes, settings, actor())
    print(f"device '{args.hostname}' updated ({devices.device_json(device)['health']})")
    return 0


def devices_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = devices.list_devices(include_retired=args.all or args.health == "RETIRED",
                                state=args.state, health=args.health)
    emit(devices.devices_json(rows), DEVICE_COLUMNS, args.format)
    return 0


def devices_details(args: argparse.Namespace, settings: Settings) -> int:
    info = devices.device_json(devices.get_device(args.hostname))
    history = devices.health_history(args.hostname)[:5]
    info["health_history"] = [f"{h['time']} {h['old_health']} → {h['new_health']} by {h['actor']}: {h['reason']}"
                              for h in map(devices.history_json, history)]
    details(info)
    return 0


def device_tags_add(args: argparse.Namespace, settings: Settings) -> int:
    print(" ".join(devices.add_device_tags(args.hostname, args.tags)))
    return 0


def device_tags_remove(args: argparse.Namespace, settings: Settings) -> int:
    print(" ".join(devices.remove_device_tags(args.hostname, args.tags)))
    return 0


def device_tags_show(args: argparse.Namespace, settings: Settings) -> int:
    print(" ".join(devices.device_tags(devices.get_device(args.hostname))))
    return 0


def device_tags_list(args: argparse.Namespace, settings: Settings) -> int:
    emit([tags.tag_json(t, devices=True) for t in tags.list_tags()], ["name", "description", "devices"], args.format)
    return 0


def device_tags_create(args: argparse.Namespace, settings: Settings) -> int:
    tags.create_tag({"name": args.name, "description": args.description})
    print(f"tag '{args.name}' added")
    return 0


# Arguments ########################################################################


def _device_type_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--description")
    p.add_argument("--template", help="template name without .jinja2 (default: the type name)")
    p.add_argument("--health-frequency", type=int)
    p.add_argument("--health-denominator", choices=["hours", "jobs"])
    p.add_argument("--health-check", metavar="FILE", help="health-check job definition ('-': stdin)")
    flag_pair(p, "display", "--show", "--hide", "show the type in lists and the dashboard")


def _device_types(sub: argparse._SubParsersAction) -> None:
    verbs = noun(sub, "device-types", "device types")
    p = add_verb(verbs, "add", device_types_add, "add a device type ('*': every installed template)")
    p.add_argument("name")
    _device_type_options(p)
    p.add_argument("--disable-health-checks", action="store_const", const=True)
    p = add_verb(verbs, "update", device_types_update, "change a device type")
    p.add_argument("name")
    _device_type_options(p)
    flag_pair(p, "disable_health_checks", "--disable-health-checks", "--enable-health-checks",
               "no health checks for devices of this type")
    p = add_verb(verbs, "list", device_types_list, "list device types")
    p.add_argument("--all", "-a", action="store_true", help="also templates not added as device types")
    formats(p)
    p = add_verb(verbs, "details", device_types_details, "show a device type")
    p.add_argument("name")
    p.add_argument("--devices", action="store_true", help="list the devices, not just count them")


def _owner_options(p: argparse.ArgumentParser) -> None:
    owner = p.add_mutually_exclusive_group()
    owner.add_argument("--owner", metavar="USER", help="only this user may submit to the device")
    owner.add_argument("--group", metavar="GROUP", help="only members of this group may submit")
    physical = p.add_mutually_exclusive_group()
    physical.add_argument("--physical-user", metavar="USER", help="who has physical access")
    physical.add_argument("--physical-group", metavar="GROUP", help="which group has physical access")


def _devices(sub: argparse._SubParsersAction) -> None:
    verbs = noun(sub, "devices", "devices")
    p = add_verb(verbs, "add", devices_add, "add a device (health Unknown, or Maintenance with --offline)")
    p.add_argument("hostname")
    p.add_argument("--device-type", required=True)
    p.add_argument("--worker", required=True)
    p.add_argument("--dictionary", metavar="FILE", help="device dictionary (jinja2; '-': stdin)")
    p.add_argument("--tags", nargs="+", metavar="TAG", help="tags, created when missing")
    p.add_argument("--description")
    p.add_argument("--offline", action="store_true", help="start in Maintenance")
    _owner_options(p)
    p = add_verb(verbs, "update", devices_update, "change a device")
    p.add_argument("hostname")
    p.add_argument("--device-type")
    p.add_argument("--worker")
    p.add_argument("--dictionary", metavar="FILE", help="device dictionary (jinja2; '-': stdin)")
    p.add_argument("--description")
    p.add_argument("--health", type=str.upper, choices=DEVICE_HEALTHS)
    p.add_argument("--reason", help="why the health changes (kept in the health history)")
    p.add_argument("--no-owner", action="store_true", help="anyone may submit to the device")
    _owner_options(p)
    p = add_verb(verbs, "list", devices_list, "list devices (not Retired ones unless --all)")
    p.add_argument("--state", type=str.upper, choices=DEVICE_STATES)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--health", type=str.upper, choices=DEVICE_HEALTHS)
    which.add_argument("--all", "-a", action="store_true")
    formats(p)
    p = add_verb(verbs, "details", devices_details, "show a device and its recent health changes")
    p.add_argument("hostname")


def _device_tags(sub: argparse._SubParsersAction) -> None:
    verbs = noun(sub, "device-tags", "tags on devices")
    for p in add_verbs(verbs, ("add", device_tags_add, "tag a device (tags are created when missing)"),
                       ("remove", device_tags_remove, "untag a device")):
        p.add_argument("hostname")
        p.add_argument("--tags", nargs="+", required=True, metavar="TAG")
    p = add_verb(verbs, "show", device_tags_show, "a device's tags")
    p.add_argument("hostname")
    p = add_verb(verbs, "list", device_tags_list, "every tag and its devices")
    formats(p)
    p = add_verb(verbs, "create", device_tags_create, "add a tag")
    p.add_argument("name")
    p.add_argument("description", nargs="?", default="")



def add_arguments(sub: argparse._SubParsersAction) -> None:
    _device_types(sub)
    _devices(sub)
    _device_tags(sub)
