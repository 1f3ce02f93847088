"""Whole-job rules: top-level keys, context, notify, MultiNode, and the actions list.

The deploy, boot, test and command methods are not listed here: each method module in
``dispatcher/actions/`` carries the check of its own block, and the tables below are built
from ``dispatcher/actions/registry.py``. What the schema accepts is therefore exactly what
dutlab-run can build (tests/unit/dispatcher/test_registry.py holds the two together).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Any

from ..actions import registry
from . import multinode
from .common import (
    ACTION_FIELDS,
    ANY_MAPPING,
    HEADERS,
    NAME,
    STRINGS,
    Check,
    check_timeout,
    choice,
    describe_timeout,
    dict_of,
    fail,
    integer,
    join,
    kind_of,
    list_of,
    mapping,
    one_of,
    scalar,
    single_line,
    string,
    timeout_seconds,
    unknown_key,
    url,
    words,
)

# LAVA's method names (reference §5.4/5.5), to tell "not supported yet" from a typo.
LAVA_DEPLOY_METHODS = words(
    "avh docker download downloads fastboot flasher fvp iso-installer mps musca nbd nfs overlay qdl "
    "recovery sata sd ssh tftp tmpfs u-boot-ums usb usbg-ms uuu vemsd"
)
LAVA_BOOT_METHODS = words(
    "avh barebox bootloader cmsis-dap depthcharge dfu docker fastboot fvp gdb grub grub-efi ipxe jlink "
    "kexec minimal monitor musca new_connection nodebooter openocd pyocd qdl qemu qemu-iso qemu-nfs "
    "recovery schroot ssh u-boot uefi uefi-menu uuu"
)
LAVA_TEST_KINDS = words("definitions monitors interactive")
CONTEXT_VARIABLES = words(
    "arch boot_console boot_root cpu extra_options guestfs_driveid guestfs_interface guestfs_size "
    "machine memory model monitor netdevice no_kvm no_network serial vga booti_dtb_addr "
    "booti_kernel_addr booti_ramdisk_addr bootm_dtb_addr bootm_kernel_addr bootm_ramdisk_addr "
    "bootz_dtb_addr bootz_kernel_addr bootz_ramdisk_addr deploy_character_delay "
    "boot_character_delay boot_retry bootloader_prompt console_device custom_kernel_args "
    "extra_kernel_args extra_nfsroot_args failure_retry kernel_loglevel kernel_start_message "
    "lava_test_results_dir menu_interrupt_prompt mustang_menu_list test_character_delay "
    "tftp_mac_address uboot_extra_error_message uboot_needs_interrupt uboot_altbank"
)

#: the block checks of the registered methods: kind -> method -> check
_METHODS: dict[str, dict[str, Check]] = {
    kind: {module.METHOD: module.SCHEMA for module in modules} for kind, modules in registry.METHODS.items()
}
#: What dutlab runs, as data so docs and errors reuse it: deploy `to:`, boot `method:`, the key
#: that selects the kind of test; a command block has one form.
SUPPORTED: dict[str, tuple[str, ...]] = {kind: tuple(table) for kind, table in _METHODS.items()}

_JOB_TIMEOUTS = mapping(
    {"job": check_timeout, "action": check_timeout, "actions": dict_of(check_timeout),
     "connection": check_timeout, "connections": dict_of(check_timeout), "queue": check_timeout},
    required=("job",),
)

# Actions list #####################################################################


def _by_method(kind: str, key: str, lava_names: frozenset[str]) -> Check:
    table = _METHODS[kind]

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            fail(path, f"A {kind} action is a mapping, got {kind_of(value)}.")
        if key not in value:
            fail(join(path, key), f"The required key {key!r} is missing; use one of: {one_of(table)}.")
        method = value[key]
        if not isinstance(method, str) or method not in table:
            known = isinstance(method, str) and method in lava_names
            what = "a LAVA method dutlab does not support yet" if known else "unknown"
            fail(join(path, key), f"The {kind} method {method!r} is {what}; use one of: {one_of(table)}.")
        table[method](value, path)

    return check


def _test(value: Any, path: str) -> None:
    """A test block holds one list, and its key (``definitions``, ...) selects the method."""
    table = _METHODS["test"]
    if not isinstance(value, dict):
        fail(path, f"A test action is a mapping, got {kind_of(value)}.")
    kinds = [key for key in value if key in table]
    if len(kinds) > 1:
        fail(join(path, kinds[1]), f"A test action has one of {one_of(table)}, not both "
                                   f"{kinds[0]} and {kinds[1]}; split it into two test actions.")
    allowed = [*ACTION_FIELDS, *table]
    for key in value:
        if key in LAVA_TEST_KINDS and key not in table:
            fail(join(path, key), f"The LAVA test kind {key!r} is not supported by dutlab yet; "
                                  f"use {one_of(table)}.")
        if key not in allowed:
            unknown_key(key, allowed, join(path, key))
    if not kinds:
        fail(path, f"A test action needs one of: {one_of(table)}.")
    table[kinds[0]](value, path)


def _single(kind: str) -> Check:
    """A kind with one form (command): the block check of its one module."""
    (check,) = _METHODS[kind].values()
    return check


_ACTIONS: dict[str, Check] = {
    "deploy": _by_method("deploy", "to", LAVA_DEPLOY_METHODS),
    "boot": _by_method("boot", "method", LAVA_BOOT_METHODS),
    "test": _test,
    "command": _single("command"),
}


def _action(value: Any, path: str) -> None:
    if not isinstance(value, dict) or len(value) != 1:
        got = f"{len(value)} keys" if isinstance(value, dict) else kind_of(value)
        fail(path, f"Each action is a mapping with exactly one key ({one_of(_ACTIONS)}); got {got}.")
    (kind, body), = value.items()
    if kind not in _ACTIONS:
        unknown_key(kind, _ACTIONS, join(path, kind))
    _ACTIONS[kind](body, join(path, kind))


# Top level ########################################################################


def _visibility(value: Any, path: str) -> None:
    if isinstance(value, dict):
        mapping({"group": list_of(string(), min_items=1)}, required=("group",))(value, path)
    elif value not in ("public", "personal"):
        fail(path, f"Visibility is public, personal or {{group: [names]}}; got {value!r}.")


def _priority(value: Any, path: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool):
        integer(0, 100)(value, path)
    elif value not in ("high", "medium", "low"):
        fail(path, f"Priority is high, medium, low or an integer from 0 to 100; got {value!r}.")


def _context(extra: Iterable[str]) -> Check:
    allowed = CONTEXT_VARIABLES | set(extra)

    def check(value: Any, path: str) -> None:
        if not isinstance(value, dict):
            fail(path, f"Expected a mapping, got {kind_of(value)}.")
        for key, entry in value.items():
            if key not in allowed:
                if key in ("kvm", "enable_kvm"):
                    fail(join(path, key), "KVM is a property of the device; an admin sets it in its dictionary.")
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                guess = f" (did you mean {close[0]!r}?)" if close else ""
                fail(join(path, key), f"The context variable {key!r} is not allowed{guess}; "
                                      "see the job reference for the list of allowed variables.")
            if isinstance(entry, list):
                list_of(single_line)(entry, join(path, key))
            else:
                single_line(entry, join(path, key))

    return check


def _criteria(value: Any, path: str) -> None:
    mapping({"status": choice("all", "finished", "running", "complete", "canceled", "incomplete"),
             "dependency_query": string(), "type": choice("regression", "progression")},
            required=("status",))(value, path)
    if value["status"] == "all" and len(value) > 1:
        fail(path, "With status: all no other criteria are allowed.")
    if "type" in value and value["status"] not in ("complete", "incomplete"):
        fail(join(path, "type"), "A regression/progression type needs status complete or incomplete.")


def _recipient_to(value: Any, path: str) -> None:
    mapping({"method": choice("email", "irc"), "user": string(), "email": string(), "handle": string(),
             "server": string()}, required=("method",))(value, path)
    needs = "email" if value["method"] == "email" else "handle"
    if needs not in value and "user" not in value:
        fail(path, f"A recipient by {value['method']} needs {needs!r} or 'user'.")


_CALLBACK = mapping({"url": url(("http", "https")), "method": choice("GET", "POST"), "token": string(),
                     "header": string(), "dataset": choice("minimal", "logs", "results", "all"),
                     "content-type": choice("json", "urlencoded")}, required=("url",))
_NOTIFY_FIELDS = {
    "criteria": _criteria, "verbosity": choice("verbose", "quiet", "status-only"),
    "recipients": list_of(mapping({"to": _recipient_to}, required=("to",))),
    "callback": _CALLBACK, "callbacks": list_of(_CALLBACK, min_items=1),
    "compare": mapping({"blacklist": STRINGS, "query": mapping(
        {"username": string(), "name": string(), "entity": string(), "conditions": HEADERS})}),
}


def _notify(value: Any, path: str) -> None:
    mapping(_NOTIFY_FIELDS, required=("criteria",))(value, path)
    if "callback" in value and "callbacks" in value:
        fail(join(path, "callbacks"), "Use either callback or callbacks, not both.")


def _protocols(extra_context: Iterable[str]) -> Check:
    return mapping({multinode.PROTOCOL: multinode.protocol_check(_context(extra_context))})


def _top_level(extra_context: Iterable[str], group: bool) -> Check:
    fields: dict[str, Check] = {
        "job_name": string(max_len=200), "device_type": NAME, "timeouts": _JOB_TIMEOUTS,
        "visibility": _visibility, "priority": _priority, "context": _context(extra_context),
        "tags": STRINGS, "metadata": ANY_MAPPING, "secrets": dict_of(string()),
        "environment": dict_of(scalar), "notify": _notify, "protocols": _protocols(extra_context),
        "actions": list_of(_action, min_items=1),
    }
    required = ["job_name", "device_type", "timeouts", "actions"]
    if group:  # a submitted group names device types per role (multinode.check_roles)
        required.remove("device_type")
    return mapping(fields, required)


# Whole-job rules ##################################################################


def _timeouts_in(job: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    top = job["timeouts"]
    for key in ("action", "connection"):
        if key in top:
            yield f"timeouts.{key}", top[key]
    for key in ("actions", "connections"):
        for name, value in top.get(key, {}).items():
            yield f"timeouts.{key}.{name}", value
    for index, action in enumerate(job["actions"]):
        (kind, body), = action.items()
        path = f"actions[{index}].{kind}"
        if "timeout" in body:
            yield f"{path}.timeout", body["timeout"]
        for name, value in body.get("timeouts", {}).items():
            yield f"{path}.timeouts.{name}", value


def _check_job_rules(job: dict[str, Any]) -> None:
    limit = timeout_seconds(job["timeouts"]["job"])
    for path, value in _timeouts_in(job):
        if timeout_seconds(value) > limit:
            fail(path, f"This timeout ({describe_timeout(value)}) is longer than the job timeout "
                       f"({describe_timeout(job['timeouts']['job'])}); shorten it or raise timeouts.job.")
    bodies = [next(iter(action.values())) for action in job["actions"]]
    if any("namespace" in body for body in bodies):
        for index, body in enumerate(bodies):
            if "namespace" not in body:
                fail(f"actions[{index}]", "Some actions set a namespace, so every action must set one.")
    if multinode.is_submission(job):
        multinode.check_roles(job, bodies)
    elif multinode.is_sub_job(job):
        multinode.check_sub_job(job, bodies)



# Public API #######################################################################


def validate_job(job: dict[str, Any], *, extra_context_variables: Iterable[str] = ()) -> dict[str, Any]:
    """Check a parsed job definition; return it unchanged or raise the first JobDefinitionError.

    :param extra_context_variables: context keys a lab allows beyond LAVA's list
        (LAVA's EXTRA_CONTEXT_VARIABLES setting).
    """
    if not isinstance(job, dict):
        fail("", f"A job definition is a mapping of keys such as job_name and actions, not {kind_of(job)}.")
    extra = tuple(extra_context_variables)
    _top_level(extra, multinode.is_submission(job))(job, "")
    _check_job_rules(job)
    return job


