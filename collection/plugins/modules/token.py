#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

DOCUMENTATION = r"""
module: token
short_description: Manage API tokens of dutlab users
version_added: 0.1.0
description:
  - Create or delete an API token of a dutlab user. A token is known by its user and O(description).
  - The server stores only a hash of the secret; it shows the secret once, when the token is created,
    and this module returns it then as RV(secret). Run the task with C(no_log) and store the secret at once.
  - Admins manage the tokens of every user; other users only their own.
author:
  - dutlab maintainers (@dutlab)
extends_documentation_fragment:
  - dutlab.lab._server
  - dutlab.lab._server.ACTIONGROUP
  - dutlab.lab._server.ATTRIBUTES
options:
  user:
    description: The user the token belongs to. Defaults to the user of O(api_token).
    type: str
  description:
    description: What the token is for; it names the token, so keep it unique per user.
    type: str
    required: true
  state:
    description:
      - V(present) creates the token when the user has no token with this description.
      - V(absent) deletes every token of the user with this description.
    type: str
    choices: [present, absent]
    default: present
  secret:
    description:
      - Create the token with this secret (8 to 128 letters, digits or C(. _ ~ -)), for example a token
        brought over from LAVA. Used only when the token is created.
    type: str
"""

EXAMPLES = r"""
- name: A token for the CI system
  dutlab.lab.token:
    api_url: http://lab.example.org:8000
    api_token: "{{ dutlab_admin_token }}"
    user: ci-bot
    description: gitlab-ci
  register: ci_token
  no_log: true

- name: Keep it in the CI's secret store (only when it was just created)
  ansible.builtin.copy:
    content: "{{ ci_token.secret }}\n"
    dest: /etc/ci/dutlab-token
    mode: "0600"
  when: ci_token.secret is defined
  no_log: true

- name: Revoke it
  dutlab.lab.token:
    user: ci-bot
    description: gitlab-ci
    state: absent
"""

RETURN = r"""
token:
  description: The token (without its secret) after the change (predicted in check mode).
  returned: when O(state=present)
  type: dict
  sample:
    id: 7
    user: ci-bot
    description: gitlab-ci
    prefix: 4kq8r1
    created: "2026-11-27T23:10:00Z"
    last_used: null
secret:
  description: The token's secret; the server shows it only now.
  returned: when the token was created, not in check mode
  type: str
  sample: 4kq8r1xv7m3n5b9z2w6y4t8u1p0s3d5f7g9j0h2c
operation:
  description: What was done (or would be done in check mode).
  returned: always
  type: str
  choices: [create, remove, none]
  sample: create
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.dutlab.lab.plugins.module_utils._api import _DutlabObjectModule, api_argument_spec

_ARGUMENT_SPEC = dict(
    user=dict(type="str"),
    description=dict(type="str", required=True),
    state=dict(type="str", default="present", choices=["present", "absent"]),
    secret=dict(type="str", no_log=True),
)
_ARGUMENT_SPEC.update(api_argument_spec())


class DutlabTokenModule(_DutlabObjectModule):
    api_endpoint = "tokens"
    result_key = "token"
    identifier = "description"
    fields = ("user",)

    def owner(self):
        if self.params["user"] is None:
            self.params["user"] = self.client.request("GET", "system/whoami").get("username")
        return self.params["user"]

    def read(self):
        user = self.owner()
        self.found = [t for t in self.client.get_all("tokens", {"user": user}) if t["description"] == self.name]
        return self.found[0] if self.found else None

    def create(self, desired):
        body = dict(desired, description=self.name)
        if self.params["secret"] is not None:
            body["secret"] = self.params["secret"]
        if self.module.check_mode:
            return dict(body, secret=None)
        return self.client.request("POST", self.api_endpoint, body=body)

    def delete(self, before):
        if not self.module.check_mode:
            for token in self.found:
                self.client.request("DELETE", "tokens/%s" % token["id"])

    def run(self):
        result = super(DutlabTokenModule, self).run()
        token = result.get(self.result_key)
        if token is not None:
            secret = token.pop("secret", None)
            if secret:
                result["secret"] = secret
        return result


def main():
    module = AnsibleModule(argument_spec=_ARGUMENT_SPEC, supports_check_mode=True)
    DutlabTokenModule(module).execute()


if __name__ == "__main__":
    main()
