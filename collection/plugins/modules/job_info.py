#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
module: job_info
short_description: Read test jobs of a dutlab lab
version_added: 0.1.0
description:
  - Read one job of a dutlab server with its results, or list jobs, newest first.
  - Only jobs the token's user may see are returned.
author:
  - dutlab maintainers (@dutlab)
extends_documentation_fragment:
  - dutlab.lab._server
  - dutlab.lab._server.ACTIONGROUP
  - dutlab.lab._server.INFO_ATTRIBUTES
options:
  id:
    description: Read only this job. The task fails when it does not exist (or is not visible).
    type: int
  state:
    description: Only jobs in this state.
    type: str
    choices: [Submitted, Scheduling, Scheduled, Running, Canceling, Finished]
  health:
    description: Only jobs with this health.
    type: str
    choices: [Unknown, Complete, Incomplete, Canceled]
  device_type:
    description: Only jobs for this device type.
    type: str
  submitter:
    description: Only jobs of this user.
    type: str
  limit:
    description: At most this many jobs (newest first).
    type: int
    default: 50
  results:
    description: Also return each job's test results, under the key C(results) of each job.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: The last ten jobs that did not complete
  dutlab.lab.job_info:
    api_url: http://lab.example.org:8000
    api_token: "{{ dutlab_token }}"
    health: Incomplete
    limit: 10
  register: failed

- name: The first of them with its results
  dutlab.lab.job_info:
    id: "{{ failed.jobs[0].id }}"
    results: true
  when: failed.jobs | length > 0
"""

RETURN = r"""
jobs:
  description: The jobs, newest first.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 42
      state: Finished
      health: Complete
      device_type: qemu
      actual_device: qemu01
      failure_comment: null
      results:
        - suite: lava
          name: job
          result: pass
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dutlab.lab.plugins.module_utils._api import DutlabClient, DutlabError, api_argument_spec

FILTERS = ("state", "health", "device_type", "submitter")
_ARGUMENT_SPEC = dict(
    id=dict(type="int"),
    state=dict(type="str", choices=["Submitted", "Scheduling", "Scheduled", "Running", "Canceling", "Finished"]),
    health=dict(type="str", choices=["Unknown", "Complete", "Incomplete", "Canceled"]),
    device_type=dict(type="str"),
    submitter=dict(type="str"),
    limit=dict(type="int", default=50),
    results=dict(type="bool", default=False),
)
_ARGUMENT_SPEC.update(api_argument_spec())


def read(module, client):
    params = module.params
    if params["id"] is not None:
        jobs = [client.request("GET", "jobs/%d" % params["id"])]
    else:
        query = dict((k, params[k]) for k in FILTERS if params[k])
        query["limit"] = max(1, min(params["limit"], 1000))
        jobs = client.request("GET", "jobs", query=query)["results"]
    if params["results"]:
        for job in jobs:
            job["results"] = client.request("GET", "jobs/%d/results" % job["id"], query={"format": "json"}) or []
    return jobs


def main():
    module = AnsibleModule(argument_spec=_ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=[("id", f) for f in FILTERS])
    client = DutlabClient.from_module(module)
    try:
        jobs = read(module, client)
    except DutlabError as exc:
        module.fail_json(msg=str(exc), status=exc.status, error=exc.message)
    module.exit_json(changed=False, jobs=jobs)


if __name__ == "__main__":
    main()
