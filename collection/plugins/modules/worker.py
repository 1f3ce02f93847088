#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
module: worker
short_description: Register a dispatcher worker with a dutlab lab
version_added: 0.1.0
description:
  - Add, change or remove a dispatcher worker on a dutlab server.
  - The server shows a worker's token once, when the worker is created (or its token renewed with
    O(regenerate_token=true)); this module returns it then as RV(token). Store it on the worker host
    right away (the C(dutlab.lab.worker) role writes it to C(/etc/dutlab/worker-token)).
author:
  - dutlab maintainers (@dutlab)
extends_documentation_fragment:
  - dutlab.lab._server
  - dutlab.lab._server.ACTIONGROUP
  - dutlab.lab._server.ATTRIBUTES
options:
  name:
    description: The worker's name, as the worker daemon gives it with C(--name) (usually its host name).
    type: str
    required: true
    aliases: [hostname]
  state:
    description:
      - Whether the worker should exist. The server refuses to remove a worker that still has devices.
    type: str
    choices: [present, absent]
    default: present
  description:
    description: Free text.
    type: str
  health:
    description:
      - V(Active) workers get jobs; V(Maintenance) and V(Retired) ones do not.
      - Going back to V(Active) makes its V(Good) devices V(Unknown), so a health check proves them again.
    type: str
    choices: [Active, Maintenance, Retired]
  reason:
    description: Why O(health) changes, kept in the health history of the worker's devices.
    type: str
  job_limit:
    description: At most this many jobs run on the worker at once; V(0) means no limit.
    type: int
  regenerate_token:
    description:
      - Give an existing worker a new token and return it as RV(token); the old token stops working at once.
      - Use it when the worker host lost its token file. Always reports a change.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Register worker01 and keep its token
  dutlab.lab.worker:
    api_url: http://lab.example.org:8000
    api_token: "{{ dutlab_admin_token }}"
    name: worker01
    description: rack 2, QEMU and three boards
  register: registered
  no_log: true

- name: Write the token on the worker (only when it was just created)
  ansible.builtin.copy:
    content: "{{ registered.token }}\n"
    dest: /etc/dutlab/worker-token
    mode: "0600"
  when: registered.token is defined
  no_log: true

- name: Maintenance of the whole rack
  dutlab.lab.worker:
    name: worker01
    health: Maintenance
    reason: "UPS replacement"
"""

RETURN = r"""
worker:
  description: The worker as the server shows it after the change (predicted in check mode).
  returned: when O(state=present)
  type: dict
  sample:
    hostname: worker01
    description: rack 2
    state: Offline
    health: Active
    job_limit: 0
    version: null
    last_ping: null
    devices: []
token:
  description: The worker's token; the server shows it only now.
  returned: when the worker was created or O(regenerate_token=true), not in check mode
  type: str
  sample: 0h4c2kq8r1xv7m3n5b9z2w6y4t8u1p0s3d5f7g9j
operation:
  description: What was done (or would be done in check mode).
  returned: always
  type: str
  choices: [create, update, remove, none]
  sample: create
"""

from types import MappingProxyType

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dutlab.lab.plugins.module_utils._api import (
    OPERATION_UPDATE,
    _DutlabObjectModule,
    api_argument_spec,
)

_ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True, aliases=["hostname"]),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    description=dict(type="str"),
    health=dict(type="str", choices=["Active", "Maintenance", "Retired"]),
    reason=dict(type="str"),
    job_limit=dict(type="int"),
    regenerate_token=dict(type="bool", default=False, no_log=False),
)
_ARGUMENT_SPEC.update(api_argument_spec())


class DutlabWorkerModule(_DutlabObjectModule):
    api_endpoint = "workers"
    result_key = "worker"
    identifier = "name"
    api_names = MappingProxyType({"name": "hostname"})
    fields = ("description", "health", "job_limit")

    def changes(self, before, desired):
        changes = super(DutlabWorkerModule, self).changes(before, desired)
        if "health" in changes and self.params["reason"]:
            changes["reason"] = self.params["reason"]
        return changes

    def create(self, desired):
        worker = super(DutlabWorkerModule, self).create(desired)
        self.token = worker.pop("token", None)
        return worker

    def update(self, before, changes):
        after = super(DutlabWorkerModule, self).update(before, changes)
        after.pop("reason", None)
        return after

    def run(self):
        self.token = None
        result = super(DutlabWorkerModule, self).run()
        if self.params["regenerate_token"] and self.params["state"] == "present" and result["operation"] != "create":
            if not self.module.check_mode:
                self.token = self.client.request("POST", self.path() + "/token")["token"]
            result.update(changed=True, operation=OPERATION_UPDATE)
        if self.token:
            result["token"] = self.token
        return result


def main():
    module = AnsibleModule(argument_spec=_ARGUMENT_SPEC, supports_check_mode=True, required_by={"reason": "health"})
    DutlabWorkerModule(module).execute()


if __name__ == "__main__":
    main()
