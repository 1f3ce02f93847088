"""The lab's domain: one module per object family, the only place that changes lab state.

Each module owns its objects' checks, state transitions and the one JSON shape of each
resource; REST (`api/`), XML-RPC (`rpc/`) and the admin CLI (`manage/`) only translate
requests into calls of these functions and their answers into the wire format (XML-RPC may
rename or pick fields for LAVA's format, never rebuild them from the models).

    checks        the field checks every module shares (names, texts, labels, pages, 4xx)
    definitions   job definitions against the dispatcher's schema and pipeline (its only importer)
    users         users, groups and their permissions (to each user directly or through groups)
    tokens        API tokens
    logins        password logins, local and LDAP (ldapauth.py), LDAP accounts (addldapuser)
    tags          device tags
    device_types  device types, their templates and health-check definitions
    devices       devices, dictionaries, device tags and the one device-health transition
    multinode     MultiNode groups: submission checks, sub-ids, group cancel and end, the matching
    pipelines     the pipeline a job gets on its devices (the part of the verdict that renders them)
    submissions   the one verdict on a job definition (schema, lab, pipeline) before it is stored
    jobs          submit, cancel, resubmit, run, finish
    job_views     the job JSON, which jobs a user sees, who may read its definition (secrets), config, description
    workers       workers, their health, heartbeats and what each must start or cancel
    worker_files  the files kept per worker (LAVA's dispatcher.d/<worker>.yaml, env.yaml, env-dut.yaml)
    results       log batches, the test cases derived from them and their exports
    maintenance   the whole lab into Maintenance (before work on it, after a restore)

Every function validates its input and raises `ApiError(4xx, sentence, path)`; changes are
given as dicts so that "only the given fields change" (PATCH) and "unknown field" errors
work the same everywhere. This file imports nothing, so the modules can import each other
in one direction (the list above is that order) without a cycle through the package.
"""
