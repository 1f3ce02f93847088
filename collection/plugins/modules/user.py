#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
module: user
short_description: Manage a local user of a dutlab lab
version_added: 0.1.0
description:
  - Add, change or remove a local user account on a dutlab server.
  - Only the options you give are compared and changed.
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
      - The password never appears in the diff; a password change shows as C(password_changed).
options:
  username:
    description: The login name.
    type: str
    required: true
    aliases: [name]
  state:
    description:
      - Whether the user should exist.
      - The server refuses to remove a user who submitted jobs or owns devices; use O(active=false) for them.
    type: str
    choices: [present, absent]
    default: present
  email:
    description: E-mail address for job notifications.
    type: str
  password:
    description:
      - The password for the web UI and for creating tokens with a password. At least 4 characters.
    type: str
  update_password:
    description:
      - V(on_create) sets O(password) only when the user is created.
      - V(always) also sets it on an existing user when it is not the user's password; the module checks
        by logging in, so an inactive user's password is set (and reported as a change) on every run.
    type: str
    choices: [on_create, always]
    default: on_create
  superuser:
    description: Superusers hold every permission.
    type: bool
  staff:
    description: Member of the group C(staff), which holds the admin permission (LAVA's staff flag).
    type: bool
  active:
    description: Inactive users cannot log in and their tokens stop working.
    type: bool
  groups:
    description:
      - The groups the user belongs to; the list replaces the user's groups (see also O(staff)).
      - The groups must exist (see M(dutlab.lab.group)).
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: A test writer in the kernel team
  dutlab.lab.user:
    api_url: http://lab.example.org:8000
    api_token: "{{ dutlab_admin_token }}"
    username: alice
    email: alice@example.org
    password: "{{ vault_alice_password }}"
    groups: [kernel-team]

- name: A second admin
  dutlab.lab.user:
    username: bob
    staff: true

- name: Alice left; keep her job history
  dutlab.lab.user:
    username: alice
    active: false
"""

RETURN = r"""
user:
  description: The user as the server shows it after the change (predicted in check mode); never the password.
  returned: when O(state=present)
  type: dict
  sample:
    username: alice
    email: alice@example.org
    is_active: true
    is_superuser: false
    is_staff: false
    groups: [kernel-team]
    date_joined: "2026-11-27T23:10:00Z"
    last_login: null
password_changed:
  description: Whether the password was (or in check mode would be) set.
  returned: when O(state=present)
  type: bool
  sample: false
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
    DutlabError,
    _DutlabObjectModule,
    api_argument_spec,
)

STAFF_GROUP = "staff"
_ARGUMENT_SPEC = dict(
    username=dict(type="str", required=True, aliases=["name"]),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    email=dict(type="str"),
    password=dict(type="str", no_log=True),
    update_password=dict(type="str", default="on_create", choices=["on_create", "always"], no_log=False),
    superuser=dict(type="bool"),
    staff=dict(type="bool"),
    active=dict(type="bool"),
    groups=dict(type="list", elements="str"),
)
_ARGUMENT_SPEC.update(api_argument_spec())


class DutlabUserModule(_DutlabObjectModule):
    api_endpoint = "users"
    result_key = "user"
    identifier = "username"
    fields = ("email", "superuser", "staff", "active", "groups")
    api_names = MappingProxyType({"superuser": "is_superuser", "staff": "is_staff", "active": "is_active"})
    list_fields = ("groups",)

    def same(self, field, current, wanted):
        if field == "groups" and self.params["staff"] is not None:
            # membership of staff is what `staff` says; `groups` speaks about the others
            current = [g for g in current or [] if g != STAFF_GROUP]
            wanted = [g for g in wanted or [] if g != STAFF_GROUP]
        return super(DutlabUserModule, self).same(field, current, wanted)

    def changes(self, before, desired):
        changes = super(DutlabUserModule, self).changes(before, desired)
        if "groups" in changes and self.params["staff"] is not None:
            changes["is_staff"] = self.params["staff"]
        password = self.params["password"]
        if password is not None and self.params["update_password"] == "always" and not self.password_matches(password):
            changes["password"] = password
        return changes

    def create(self, desired):
        if self.params["password"] is not None:
            self.new_password = True
            desired = dict(desired, password=self.params["password"])
        user = super(DutlabUserModule, self).create(desired)
        user.pop("password", None)
        return user

    def update(self, before, changes):
        self.new_password = "password" in changes
        user = super(DutlabUserModule, self).update(before, changes)
        user.pop("password", None)
        return user

    def password_matches(self, password):
        """Whether `password` logs the user in. The token endpoint checks the password before the
        body, so a body with an unknown field answers 400 for a right password and 401 for a wrong
        one, and creates nothing."""
        body = {"username": self.name, "password": password, "dutlab_lab_password_check": True}
        try:
            answer = self.client.request("POST", "tokens", body=body, anonymous=True)
        except DutlabError as exc:
            if exc.status in (400, 409):
                return True
            if exc.status in (401, 403):
                return False
            raise
        if isinstance(answer, dict) and answer.get("id") is not None:  # a server that ignores unknown fields
            self.client.request("DELETE", "tokens/%s" % answer["id"])
        return True

    def run(self):
        self.new_password = False
        result = super(DutlabUserModule, self).run()
        if self.params["state"] == "present":
            result["password_changed"] = bool(self.new_password and result["operation"] in ("create", "update"))
            if self.module._diff and result["password_changed"]:
                result["diff"]["after"]["password_changed"] = True
        return result


def main():
    module = AnsibleModule(argument_spec=_ARGUMENT_SPEC, supports_check_mode=True)
    DutlabUserModule(module).execute()


if __name__ == "__main__":
    main()
