#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
module: device_info
short_description: Read devices of a dutlab lab
version_added: 0.1.0
description:
  - List the devices of a dutlab server, or read one, with state, health, owners and tags.
author:
  - dutlab maintainers (@dutlab)
extends_documentation_fragment:
  - dutlab.lab._server
  - dutlab.lab._server.ACTIONGROUP
  - dutlab.lab._server.INFO_ATTRIBUTES
options:
  hostname:
    description: Read only this device. The task fails when it does not exist.
    type: str
  device_type:
    description: Only devices of this type.
    type: str
  worker:
    description: Only devices on this worker.
    type: str
  tag:
    description: Only devices with this tag.
    type: str
  state:
    description: Only devices in this state.
    type: str
    choices: [Idle, Reserved, Running]
  health:
    description: Only devices with this health.
    type: str
    choices: [Good, Unknown, Looping, Bad, Maintenance, Retired]
  dictionary:
    description:
      - Also return each device's dictionary (needs a token of an owner or an admin).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Devices that need attention
  dutlab.lab.device_info:
    api_url: http://lab.example.org:8000
    health: Bad
  register: bad

- name: Name them
  ansible.builtin.debug:
    msg: "{{ bad.devices | map(attribute='hostname') | list }}"

- name: One device with its dictionary
  dutlab.lab.device_info:
    hostname: qemu01
    dictionary: true
"""

RETURN = r"""
devices:
  description: The devices, sorted by host name.
  returned: always
  type: list
  elements: dict
  sample:
    - hostname: qemu01
      device_type: qemu
      worker: worker01
      state: Idle
      health: Good
      tags: []
      dictionary: "{% extends 'qemu.jinja2' %}"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dutlab.lab.plugins.module_utils._api import (
    DutlabClient,
    DutlabError,
    api_argument_spec,
    object_path,
)

FILTERS = ("device_type", "worker", "tag", "state", "health")
_ARGUMENT_SPEC = dict(
    hostname=dict(type="str"),
    device_type=dict(type="str"),
    worker=dict(type="str"),
    tag=dict(type="str"),
    state=dict(type="str", choices=["Idle", "Reserved", "Running"]),
    health=dict(type="str", choices=["Good", "Unknown", "Looping", "Bad", "Maintenance", "Retired"]),
    dictionary=dict(type="bool", default=False),
)
_ARGUMENT_SPEC.update(api_argument_spec())


def read(module, client):
    params = module.params
    if params["hostname"]:
        devices = [client.request("GET", object_path("devices", params["hostname"]))]
    else:
        devices = client.get_all("devices", dict((k, params[k]) for k in FILTERS if params[k]))
    if params["dictionary"]:
        for device in devices:
            answer = client.request("GET", object_path("devices", device["hostname"]) + "/dictionary")
            device["dictionary"] = answer.get("dictionary", "")
    return devices


def main():
    module = AnsibleModule(argument_spec=_ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=[("hostname", f) for f in FILTERS])
    client = DutlabClient.from_module(module)
    try:
        devices = read(module, client)
    except DutlabError as exc:
        module.fail_json(msg=str(exc), status=exc.status, error=exc.message)
    module.exit_json(changed=False, devices=devices)


if __name__ == "__main__":
    main()
