#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
module: device
short_description: Manage a device of a dutlab lab
version_added: 0.1.0
description:
  - Add, change or remove a device (a board or an emulator) on a dutlab server.
  - Only the options you give are compared and changed; the others keep the server's value.
author:
  - dutlab maintainers (@dutlab)
extends_documentation_fragment:
  - dutlab.lab._server
  - dutlab.lab._server.ACTIONGROUP
  - dutlab.lab._server.ATTRIBUTES
attributes:
  diff_mode:
    support: full
    details:
      - The diff shows the fields this module manages, including the dictionary when O(dictionary) is given.
options:
  hostname:
    description: The device's name, unique in the lab.
    type: str
    required: true
  state:
    description: Whether the device should exist.
    type: str
    choices: [present, absent]
    default: present
  device_type:
    description:
      - The device type (see M(dutlab.lab.device_type)). Required to create a device.
    type: str
  worker:
    description:
      - The dispatcher worker the device is attached to. V("") detaches it.
    type: str
  description:
    description: Free text shown in the device list.
    type: str
  tags:
    description:
      - The device's tags; missing tags are created. The list replaces the device's tags.
    type: list
    elements: str
  dictionary:
    description:
      - The device dictionary, as LAVA writes it (V({% extends 'qemu.jinja2' %}) plus C({% set %}) lines).
      - It must render through the device type's template; the server refuses it otherwise.
      - Compared as text, so keep trailing newlines stable between runs.
    type: str
  owner_user:
    description:
      - The user that owns the device; only owners may submit jobs to it. V("") clears it.
      - A device has an owner user or an owner group, not both; setting one clears the other.
    type: str
    aliases: [owner]
  owner_group:
    description:
      - The group that owns the device; only its members may submit jobs to it. V("") clears it.
    type: str
    aliases: [group]
  physical_user:
    description: The user with physical access to the device (informational). V("") clears it.
    type: str
  physical_group:
    description: The group with physical access to the device (informational). V("") clears it.
    type: str
  health:
    description:
      - The device's health. V(Unknown) makes the scheduler run a health check first.
      - Leave it unset to let the lab manage health (health checks set V(Good) or V(Bad)).
    type: str
    choices: [Good, Unknown, Looping, Bad, Maintenance, Retired]
  reason:
    description: Why O(health) changes, kept in the device's health history.
    type: str
"""

EXAMPLES = r"""
- name: A QEMU device on worker01, 512 MiB of memory
  dutlab.lab.device:
    api_url: http://lab.example.org:8000
    api_token: "{{ dutlab_admin_token }}"
    hostname: qemu01
    device_type: qemu
    worker: worker01
    tags: [kvm]
    # !unsafe: the dictionary is Jinja2 for the server; Ansible must not render it first
    dictionary: !unsafe |
      {% extends 'qemu.jinja2' %}
      {% set memory = 512 %}

- name: Take a board out for repair
  dutlab.lab.device:
    hostname: rpi4-01
    health: Maintenance
    reason: "replacing the SD card"

- name: Only members of the kernel team may use it
  dutlab.lab.device:
    hostname: rpi4-01
    owner_group: kernel-team

- name: Remove it
  dutlab.lab.device:
    hostname: qemu01
    state: absent
"""

RETURN = r"""
device:
  description: The device as the server shows it after the change (predicted in check mode).
  returned: when O(state=present)
  type: dict
  sample:
    hostname: qemu01
    device_type: qemu
    worker: worker01
    description: ""
    state: Idle
    health: Unknown
    owner_user: null
    owner_group: null
    physical_user: null
    physical_group: null
    tags: [kvm]
    has_dictionary: true
operation:
  description: What was done (or would be done in check mode).
  returned: always
  type: str
  choices: [create, update, remove, none]
  sample: update
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dutlab.lab.plugins.module_utils._api import (
    _DutlabObjectModule,
    api_argument_spec,
    object_path,
)

_HEALTHS = ["Good", "Unknown", "Looping", "Bad", "Maintenance", "Retired"]
_ARGUMENT_SPEC = dict(
    hostname=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    device_type=dict(type="str"),
    worker=dict(type="str"),
    description=dict(type="str"),
    tags=dict(type="list", elements="str"),
    dictionary=dict(type="str"),
    owner_user=dict(type="str", aliases=["owner"]),
    owner_group=dict(type="str", aliases=["group"]),
    physical_user=dict(type="str"),
    physical_group=dict(type="str"),
    health=dict(type="str", choices=_HEALTHS),
    reason=dict(type="str"),
)
_ARGUMENT_SPEC.update(api_argument_spec())


class DutlabDeviceModule(_DutlabObjectModule):
    api_endpoint = "devices"
    result_key = "device"
    identifier = "hostname"
    fields = ("device_type", "worker", "description", "tags", "dictionary", "owner_user", "owner_group",
              "physical_user", "physical_group", "health")
    list_fields = ("tags",)

    def read(self):
        device = super(DutlabDeviceModule, self).read()
        if device is not None and self.params["dictionary"] is not None:
            answer = self.client.request("GET", object_path(self.api_endpoint, self.name) + "/dictionary")
            device["dictionary"] = answer.get("dictionary", "")
        return device

    def desired(self):
        wanted = super(DutlabDeviceModule, self).desired()
        if wanted.get("worker") == "":
            wanted["worker"] = None
        return wanted

    def changes(self, before, desired):
        changes = super(DutlabDeviceModule, self).changes(before, desired)
        # one owner: asking for owner_user X while owner_group is set is a change, and vice versa
        for user_key, group_key in (("owner_user", "owner_group"), ("physical_user", "physical_group")):
            for mine, other in ((user_key, group_key), (group_key, user_key)):
                if desired.get(mine) and before.get(other) and other not in desired:
                    changes[mine] = desired[mine]
        if "health" in changes and self.params["reason"]:
            changes["reason"] = self.params["reason"]
        return changes

    def update(self, before, changes):
        after = super(DutlabDeviceModule, self).update(before, changes)
        after.pop("reason", None)
        if "dictionary" in changes or "dictionary" in before:
            after["dictionary"] = changes.get("dictionary", before.get("dictionary"))
        for user_key, group_key in (("owner_user", "owner_group"), ("physical_user", "physical_group")):
            if changes.get(user_key):
                after[group_key] = None
            if changes.get(group_key):
                after[user_key] = None
        return after

    def create(self, desired):
        after = super(DutlabDeviceModule, self).create(desired)
        if "dictionary" in desired:
            after["dictionary"] = desired["dictionary"]
        return after


def main():
    module = AnsibleModule(
        argument_spec=_ARGUMENT_SPEC,
        supports_check_mode=True,
        mutually_exclusive=[("owner_user", "owner_group"), ("physical_user", "physical_group")],
        required_by={"reason": "health"},
    )
    DutlabDeviceModule(module).execute()


if __name__ == "__main__":
    main()
