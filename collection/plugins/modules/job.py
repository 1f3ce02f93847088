#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
module: job
short_description: Submit a test job to a dutlab lab and optionally wait for it
version_added: 0.1.0
description:
  - Submit a job definition (LAVA's job YAML) to a dutlab server, and with O(wait=true) wait until it
    finished and return its health, failure comment and results.
  - Every run submits a new job, so the task always reports a change.
  - In check mode the definition is only validated by the server (C(POST /api/v1/jobs/validate)) and
    nothing is submitted; a valid one reports a change (the job a real run would submit) and RV(valid),
    an invalid one fails the task with the server's message and the path into the document.
author:
  - dutlab maintainers (@dutlab)
extends_documentation_fragment:
  - dutlab.lab._server
  - dutlab.lab._server.ACTIONGROUP
attributes:
  check_mode:
    description: Validates the definition on the server and submits nothing.
    support: full
  diff_mode:
    description: A submission has no before and after.
    support: none
options:
  definition:
    description:
      - The job definition, as YAML text or as a dictionary (sent as JSON, which the server reads as YAML).
      - Mutually exclusive with O(src).
    type: raw
  src:
    description:
      - Path of a job definition file on the managed host. Mutually exclusive with O(definition).
    type: path
  wait:
    description: Wait until the job is Finished; fail when its health is not Complete (see O(fail_on_incomplete)).
    type: bool
    default: false
  wait_timeout:
    description:
      - Seconds to wait for the job to finish. When they run out the task fails and the job goes on;
        cancel it with C(lavacli jobs cancel ID) or C(POST /api/v1/jobs/ID/cancel).
    type: int
    default: 3600
  poll_interval:
    description: Seconds between two looks at the job's state while waiting.
    type: int
    default: 2
  fail_on_incomplete:
    description: With O(wait=true), fail the task when a job ends Incomplete or Canceled.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Boot the kernel we just built and run the smoke tests
  dutlab.lab.job:
    api_url: http://lab.example.org:8000
    api_token: "{{ dutlab_token }}"
    src: jobs/qemu-smoke.yaml
    wait: true
    wait_timeout: 900
  register: smoke

- name: Show the results
  ansible.builtin.debug:
    msg: "{{ item.suite }}/{{ item.name }}: {{ item.result }}"
  loop: "{{ smoke.results }}"

- name: Validate a definition without submitting it
  dutlab.lab.job:
    definition: "{{ lookup('ansible.builtin.file', 'jobs/new.yaml') }}"
  check_mode: true
"""

RETURN = r"""
id:
  description: The job's id (the first one for a MultiNode submission).
  returned: when submitted
  type: int
  sample: 42
job_ids:
  description: Every job the submission made (several for MultiNode).
  returned: when submitted
  type: list
  elements: int
  sample: [42]
state:
  description: The job's state when the module returned (V(Finished) after waiting).
  returned: when submitted
  type: str
  sample: Finished
health:
  description: The job's health, V(Complete), V(Incomplete), V(Canceled) or V(Unknown) while it runs.
  returned: when submitted
  type: str
  sample: Complete
failure_comment:
  description: Why the job did not complete, in one sentence.
  returned: when submitted
  type: str
  sample: "boot-qemu timed out after 120 s waiting for 'login:'"
job:
  description: The job as the server shows it (submitter, device, times, error type and message, ...).
  returned: when submitted
  type: dict
  sample:
    id: 42
    state: Finished
    health: Complete
    actual_device: qemu01
    error_type: null
results:
  description: The job's test results (suite, name, result, measurement, unit, ...), after waiting.
  returned: when O(wait=true) and the job finished
  type: list
  elements: dict
  sample:
    - suite: 0_smoke
      name: uname
      result: pass
valid:
  description: Whether the definition is valid.
  returned: in check mode
  type: bool
  sample: true
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_text
from ansible_collections.dutlab.lab.plugins.module_utils._api import DutlabClient, DutlabError, api_argument_spec

_ARGUMENT_SPEC = dict(
    definition=dict(type="raw"),
    src=dict(type="path"),
    wait=dict(type="bool", default=False),
    wait_timeout=dict(type="int", default=3600),
    poll_interval=dict(type="int", default=2),
    fail_on_incomplete=dict(type="bool", default=True),
)
_ARGUMENT_SPEC.update(api_argument_spec())


def definition_text(module):
    params = module.params
    if params["src"] is not None:
        try:
            with open(params["src"], "rb") as f:
                return to_text(f.read())
        except (IOError, OSError) as exc:
            module.fail_json(msg="cannot read the job definition %s: %s" % (params["src"], exc))
    if isinstance(params["definition"], dict):
        return json.dumps(params["definition"])  # JSON is YAML: the server reads either
    return to_text(params["definition"])


def validate(module, client, text):
    answer = client.request("POST", "jobs/validate", body={"definition": text})
    if not answer.get("valid"):
        where = " (at %s)" % answer["path"] if answer.get("path") else ""
        module.fail_json(msg="the job definition is not valid: %s%s" % (answer.get("error"), where),
                         valid=False, error=answer.get("error"), field=answer.get("path") or "")
    module.exit_json(changed=True, valid=True)


def wait_for(module, client, job_ids):
    deadline = time.time() + module.params["wait_timeout"]
    jobs = {}
    while True:
        for job_id in job_ids:
            if jobs.get(job_id, {}).get("state") != "Finished":
                jobs[job_id] = client.request("GET", "jobs/%d" % job_id)
        if all(j["state"] == "Finished" for j in jobs.values()):
            return [jobs[i] for i in job_ids]
        if time.time() >= deadline:
            waiting = ", ".join("%d (%s)" % (i, jobs[i]["state"]) for i in job_ids if jobs[i]["state"] != "Finished")
            module.fail_json(msg="job %s not Finished after %d s; it goes on running" % (waiting,
                             module.params["wait_timeout"]), id=job_ids[0], job_ids=job_ids,
                             job=jobs[job_ids[0]], state=jobs[job_ids[0]]["state"])
        time.sleep(max(1, module.params["poll_interval"]))


def run(module, client):
    text = definition_text(module)
    if module.check_mode:
        validate(module, client, text)
    job_ids = client.request("POST", "jobs", body={"definition": text})["job_ids"]
    if module.params["wait"]:
        jobs = wait_for(module, client, job_ids)
    else:
        jobs = [client.request("GET", "jobs/%d" % job_ids[0])]
    job = jobs[0]
    result = dict(changed=True, id=job_ids[0], job_ids=job_ids, job=job, state=job["state"], health=job["health"],
                  failure_comment=job.get("failure_comment") or "")
    if module.params["wait"]:
        result["results"] = client.request("GET", "jobs/%d/results" % job_ids[0], query={"format": "json"}) or []
        bad = [j for j in jobs if j["health"] != "Complete"]
        if bad and module.params["fail_on_incomplete"]:
            comment = bad[0].get("failure_comment") or "no failure comment"
            module.fail_json(msg="job %d finished %s: %s" % (bad[0]["id"], bad[0]["health"], comment), **result)
    module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=_ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=[("definition", "src")], required_one_of=[("definition", "src")])
    client = DutlabClient.from_module(module)
    try:
        run(module, client)
    except DutlabError as exc:
        module.fail_json(msg=str(exc), status=exc.status, error=exc.message, field=exc.field)


if __name__ == "__main__":
    main()
