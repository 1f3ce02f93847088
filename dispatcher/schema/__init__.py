"""Validate LAVA job definitions for the features dutlab supports.

Three modules, imported one way (loader -> job -> the method registry -> common):

* ``common``: the building blocks every check is made of, ``JobDefinitionError`` and the
  timeout mappings (``timeout_seconds``). The method modules in ``dispatcher/actions/``
  build their block checks from these.
* ``job``: the whole-job rules (top-level keys, context, notify, MultiNode, the actions
  list) and ``validate_job``; its method tables come from ``dispatcher/actions/registry.py``.
* ``loader``: ``parse_job``: YAML or JSON text to a checked document (duplicate keys, size).

Choices, and why:

* Hand-written checks instead of voluptuous: voluptuous collects every error in an order
  that depends on the schema's internals and words them for programmers ("extra keys not
  allowed @ data[...]"). Here each check raises the first error with a path into the
  document (`actions[1].boot.method`, 0-based list indices) and one sentence saying what
  is allowed, and the order is fixed: in a mapping, unknown keys first (document order),
  then missing required keys, then values in the order of the tables; whole-job rules
  (timeouts against the job timeout, namespaces, MultiNode roles) run last.
* Strict: unknown keys are rejected at the top level and in actions, although LAVA
  accepts unknown top-level keys by default. A typo such as `timeout:` for `timeouts:`
  would otherwise be ignored silently, and dutlab validates everything before anything
  runs. LAVA options dutlab does not implement get their own message, so a LAVA user
  learns the job is understood but not supported.
* Duplicate keys in the YAML are an error (the YAML spec says so; PyYAML keeps the last).

This package file imports nothing: a module that needs one building block must not pull in
the method registry (and with it every action) by importing the package.
"""
