#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
module: group
short_description: Manage a group of a dutlab lab
version_added: 0.1.0
description:
  - Add, change or remove a group on a dutlab server, with its permissions and members.
  - Groups own devices (only members may submit to them) and hold permissions.
author:
  - dutlab maintainers (@dutlab)
extends_documentation_fragment:
  - dutlab.lab._server
  - dutlab.lab._server.ACTIONGROUP
  - dutlab.lab._server.ATTRIBUTES
options:
  name:
    description: The group's name.
    type: str
    required: true
  state:
    description:
      - Whether the group should exist. The server refuses to remove a group that owns devices.
    type: str
    choices: [present, absent]
    default: present
  permissions:
    description:
      - What members may do; the list replaces the group's permissions.
      - V(submit) submits jobs (needed when the server sets C(open_submission=false)),
        V(cancel_resubmit) cancels and resubmits other users' jobs, V(admin) manages the lab.
    type: list
    elements: str
    choices: [submit, cancel_resubmit, admin]
  members:
    description:
      - User names; the list replaces the group's members. The users must exist.
      - The O(dutlab.lab.user#module:groups) option of M(dutlab.lab.user) changes the same memberships
        from the user's side; use one or the other for a group.
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: The kernel team may submit and cancel each other's jobs
  dutlab.lab.group:
    api_url: http://lab.example.org:8000
    api_token: "{{ dutlab_admin_token }}"
    name: kernel-team
    permissions: [submit, cancel_resubmit]
    members: [alice, carol]

- name: Lab admins
  dutlab.lab.group:
    name: lab-admins
    permissions: [admin]
"""

RETURN = r"""
group:
  description: The group as the server shows it after the change (predicted in check mode).
  returned: when O(state=present)
  type: dict
  sample:
    name: kernel-team
    permissions: [cancel_resubmit, submit]
    members: [alice, carol]
operation:
  description: What was done (or would be done in check mode).
  returned: always
  type: str
  choices: [create, update, remove, none]
  sample: update
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dutlab.lab.plugins.module_utils._api import _DutlabObjectModule, api_argument_spec

_ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    permissions=dict(type="list", elements="str", choices=["submit", "cancel_resubmit", "admin"]),
    members=dict(type="list", elements="str"),
)
_ARGUMENT_SPEC.update(api_argument_spec())


class DutlabGroupModule(_DutlabObjectModule):
    api_endpoint = "groups"
    result_key = "group"
    identifier = "name"
    fields = ("permissions", "members")
    list_fields = ("permissions", "members")


def main():
    module = AnsibleModule(argument_spec=_ARGUMENT_SPEC, supports_check_mode=True)
    DutlabGroupModule(module).execute()


if __name__ == "__main__":
    main()
