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
  config:
    description:
      - The worker's dispatcher configuration kept by the server, LAVA's C(dispatcher.d/<worker>.yaml)
        (keys such as C(dispatcher_ip), C(dispatcher_tftp_ip), C(dispatcher_download_dir); see docs/worker.md).
      - A mapping, or the YAML text as LAVA admins keep it (comments are kept). V('') or V({}) removes it.
      - Sent to the worker with each of its jobs. The diff shows it when given.
    type: raw
  env:
    description:
      - The environment of the worker's job runs kept by the server, LAVA's C(env.yaml) (C(purge),
        C(removes), C(overrides)); the worker host's own C(env_file) is applied after it.
      - A mapping or YAML text; V('') or V({}) removes it.
    type: raw
  env_dut:
    description:
      - The environment of the test shell on the worker's devices, LAVA's C(env-dut.yaml) (C(removes),
        C(overrides)). A mapping or YAML text; V('') or V({}) removes it.
    type: raw
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
    api_url: http://lab.example.org:8000
    api_token: "{{ dutlab_admin_token }}"
    name: worker01
    health: Maintenance
    reason: "UPS replacement"

- name: The files LAVA keeps in dispatcher.d/ and env.yaml, for worker01's jobs
  dutlab.lab.worker:
    api_url: http://lab.example.org:8000
    api_token: "{{ dutlab_admin_token }}"
    name: worker01
    config:
      dispatcher_tftp_ip: 192.168.10.1
    env:
      overrides:
        http_proxy: http://proxy.lab:3128
    env_dut: |
      # what the test shell on the devices gets
      overrides: {MIRROR: "http://mirror.lab"}
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

import json
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
    config=dict(type="raw"),
    env=dict(type="raw"),
    env_dut=dict(type="raw"),
    regenerate_token=dict(type="bool", default=False, no_log=False),
)
_ARGUMENT_SPEC.update(api_argument_spec())
#: option -> the server's name of the per-worker file
_FILES = MappingProxyType({"config": "config", "env": "env", "env_dut": "env-dut"})


def _file_text(value):
    """The text stored for a file option: a mapping as JSON (which is YAML), text as given."""
    if isinstance(value, dict):
        return json.dumps(value, indent=2, sort_keys=True) + "\n" if value else ""
    return "" if value is None else str(value)


class DutlabWorkerModule(_DutlabObjectModule):
    api_endpoint = "workers"
    result_key = "worker"
    identifier = "name"
    api_names = MappingProxyType({"name": "hostname"})
    fields = ("description", "health", "job_limit")

    def given_files(self):
        return [option for option in _FILES if self.params[option] is not None]

    def managed(self):
        return super(DutlabWorkerModule, self).managed() + self.given_files()

    def read(self):
        worker = super(DutlabWorkerModule, self).read()
        for option in self.given_files() if worker is not None else ():
            worker[option] = self.client.request("GET", "%s/files/%s" % (self.path(), _FILES[option]))["text"]
        return worker

    def desired(self):
        wanted = super(DutlabWorkerModule, self).desired()
        wanted.update((option, _file_text(self.params[option])) for option in self.given_files())
        return wanted

    def changes(self, before, desired):
        changes = super(DutlabWorkerModule, self).changes(before, desired)
        if "health" in changes and self.params["reason"]:
            changes["reason"] = self.params["reason"]
        return changes

    def _put_files(self, changes):
        for option in [o for o in _FILES if o in changes]:
            text = changes.pop(option)
            if not self.module.check_mode:
                self.client.request("PUT", "%s/files/%s" % (self.path(), _FILES[option]), body={"text": text})

    def create(self, desired):
        files = dict((o, desired.pop(o)) for o in _FILES if o in desired)
        worker = super(DutlabWorkerModule, self).create(desired)
        self.token = worker.pop("token", None)
        self._put_files(dict((o, t) for o, t in files.items() if t))
        worker.update(files)
        return worker

    def update(self, before, changes):
        files = dict((o, changes[o]) for o in _FILES if o in changes)
        self._put_files(changes)
        after = super(DutlabWorkerModule, self).update(before, changes) if changes else dict(before)
        after.pop("reason", None)
        after.update(files)
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
