#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
module: device_type
short_description: Manage a device type of a dutlab lab
version_added: 0.1.0
description:
  - Add, change or remove a device type on a dutlab server, with its template and health check.
  - Only the options you give are compared and changed.
author:
  - dutlab maintainers (@dutlab)
extends_documentation_fragment:
  - dutlab.lab._server
  - dutlab.lab._server.ACTIONGROUP
  - dutlab.lab._server.ATTRIBUTES
options:
  name:
    description: The device type's name, as job definitions give it in C(device_type).
    type: str
    required: true
  state:
    description:
      - Whether the device type should exist.
      - The server refuses to remove a type that still has devices or jobs in its history; hide it with
        O(display=false) instead.
    type: str
    choices: [present, absent]
    default: present
  description:
    description: Free text.
    type: str
  template:
    description:
      - The Jinja2 template (without C(.jinja2)) that renders the devices' dictionaries.
      - V("") means a template named like the device type.
    type: str
  health_check:
    description:
      - The health-check job definition (YAML text) the devices of this type run.
      - V("") means the definition shipped for the template (C(health-checks/<template>.yaml)).
      - The server validates it like a job submission.
    type: str
  health_frequency:
    description: How often devices run a health check, in units of O(health_denominator).
    type: int
  health_denominator:
    description: Whether O(health_frequency) counts hours or jobs.
    type: str
    choices: [hours, jobs]
  health_checks_disabled:
    description: Set V(true) to run no health checks on devices of this type.
    type: bool
    aliases: [disable_health_checks]
  display:
    description: Whether the type is listed; hide retired types instead of removing them.
    type: bool
"""

EXAMPLES = r"""
- name: The QEMU device type, health check every 24 hours
  dutlab.lab.device_type:
    api_url: http://lab.example.org:8000
    api_token: "{{ dutlab_admin_token }}"
    name: qemu
    health_frequency: 24
    health_denominator: hours

- name: A board type with our own health check
  dutlab.lab.device_type:
    name: bcm2711-rpi-4-b
    health_check: "{{ lookup('ansible.builtin.file', 'health-checks/rpi4.yaml') }}"

- name: No health checks for a type under bring-up
  dutlab.lab.device_type:
    name: imx8mp-evk
    health_checks_disabled: true
"""

RETURN = r"""
device_type:
  description: The device type as the server shows it after the change (predicted in check mode).
  returned: when O(state=present)
  type: dict
  sample:
    name: qemu
    description: ""
    template: qemu
    health_frequency: 24
    health_denominator: hours
    disable_health_checks: false
    display: true
    devices: [qemu01]
    health_check: ""
operation:
  description: What was done (or would be done in check mode).
  returned: always
  type: str
  choices: [create, update, remove, none]
  sample: create
"""

from types import MappingProxyType

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dutlab.lab.plugins.module_utils._api import _DutlabObjectModule, api_argument_spec

_ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    description=dict(type="str"),
    template=dict(type="str"),
    health_check=dict(type="str"),
    health_frequency=dict(type="int"),
    health_denominator=dict(type="str", choices=["hours", "jobs"]),
    health_checks_disabled=dict(type="bool", aliases=["disable_health_checks"]),
    display=dict(type="bool"),
)
_ARGUMENT_SPEC.update(api_argument_spec())


class DutlabDeviceTypeModule(_DutlabObjectModule):
    api_endpoint = "device-types"
    result_key = "device_type"
    identifier = "name"
    fields = ("description", "template", "health_check", "health_frequency", "health_denominator",
              "health_checks_disabled", "display")
    api_names = MappingProxyType({"health_checks_disabled": "disable_health_checks"})

    def same(self, field, current, wanted):
        if field == "template" and not wanted:
            wanted = self.name  # the server shows the template in use: its own name when none is set
        return super(DutlabDeviceTypeModule, self).same(field, current, wanted)


def main():
    module = AnsibleModule(argument_spec=_ARGUMENT_SPEC, supports_check_mode=True)
    DutlabDeviceTypeModule(module).execute()


if __name__ == "__main__":
    main()
