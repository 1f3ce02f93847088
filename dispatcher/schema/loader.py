"""Job definition text to a checked document: YAML or JSON, duplicate keys, size and depth.

Parsing is kept apart from the rules so a document is bounded (aliases expanded, nesting) and
free of duplicate keys before any check walks it.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from .common import JobDefinitionError, fail, sentence_part
from .job import validate_job

MAX_NODES = 100_000  # after alias expansion; a job definition is a few hundred nodes
MAX_DEPTH = 100


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: ~10x faster
    """(C)SafeLoader that rejects duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    mark = key_node.start_mark
                    where = f"Line {mark.line + 1}, column {mark.column + 1}"
                    fail("", f"{where}: the key {key!r} appears twice in the same mapping; keep one.")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_size(value: Any, depth: int, active: set[int], sizes: dict[int, int]) -> int:
    # YAML aliases can make a small text expand to billions of nodes (or loop); count the
    # expanded size once per shared object before anything walks the document.
    if not isinstance(value, (dict, list)):
        return 1
    if id(value) in sizes:
        return sizes[id(value)]
    if id(value) in active:
        fail("", "The document refers to itself through a YAML alias; remove the recursive alias.")
    if depth > MAX_DEPTH:
        fail("", f"The document is nested more than {MAX_DEPTH} levels deep.")
    active.add(id(value))
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    total = 1 + sum(_check_size(item, depth + 1, active, sizes) for item in items)
    active.discard(id(value))
    sizes[id(value)] = total
    if total > MAX_NODES:
        fail("", f"The document expands to more than {MAX_NODES} values; simplify it or avoid YAML aliases.")
    return total


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            fail("", f"The key {key!r} appears twice in the same JSON object; keep one.")
        result[key] = value
    return result


def parse_job(text: str) -> dict[str, Any]:
    """Parse a job definition written in YAML or JSON and validate it."""
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicates)
    except (ValueError, RecursionError):
        document = _load_yaml(text)
    if document is None:
        fail("", "The job definition is empty; write a mapping with job_name, timeouts and actions.")
    _check_size(document, 0, set(), {})
    return validate_job(document)


def _prescan_yaml(text: str) -> None:
    # Composing builds every node before _check_size can count them (a few MiB of "- a" lines is
    # hundreds of MB); the event stream costs no memory, so bound depth and size on it first.
    # A document of N values has at most 2N + 4 events (a container is a start and an end event).
    depth = 0
    for events, event in enumerate(yaml.parse(text, Loader=_StrictLoader), 1):
        if events > 2 * MAX_NODES + 4:
            fail("", f"The document has more than {MAX_NODES} values; simplify it.")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                fail("", f"The document is nested more than {MAX_DEPTH} levels deep.")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _load_yaml(text: str) -> Any:
    try:
        _prescan_yaml(text)
        return yaml.load(text, Loader=_StrictLoader)  # safe: a SafeLoader subclass
    except JobDefinitionError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        fail("", f"YAML syntax error{where}: {sentence_part(exc.problem or exc.context)}.")
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: e.g. a timestamp like 2024-13-45
        fail("", f"The text is not valid YAML: {sentence_part(exc)}.")
    except RecursionError:
        fail("", f"The document is nested more than {MAX_DEPTH} levels deep.")
