# -*- coding: utf-8 -*-
# Copyright: dutlab maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# PRIVATE to the collection dutlab.lab: the connection options of every module.


class ModuleDocFragment(object):

    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - Base URL of the dutlab server, for example V(http://lab.example.org:8000).
      - If not set, the environment variable E(DUTLAB_URL) is used.
    type: str
  api_token:
    description:
      - An API token of a dutlab user, sent in the C(Authorization) header with the scheme C(Token).
      - Changing lab objects needs a user with the admin permission.
      - If not set, the environment variable E(DUTLAB_TOKEN) is used.
      - Create one with C(dutlab-server manage tokens add --user NAME) or M(dutlab.lab.token).
    type: str
  validate_certs:
    description:
      - Whether to check the server's TLS certificate. Only set V(false) on a lab you control.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of CA certificates to check the server's certificate with.
    type: path
  timeout:
    description:
      - Seconds to wait for one answer of the server.
    type: int
    default: 30
notes:
  - Set the connection once for a play with C(module_defaults) and the action group
    C(group/dutlab.lab.api).
"""

    ACTIONGROUP = r"""
attributes:
  action_group:
    description: Use C(group/dutlab.lab.api) in C(module_defaults) to set the connection options once.
    support: full
    membership:
      - dutlab.lab.api
"""

    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without changing the lab.
    support: full
  diff_mode:
    description: Will return details on what has changed (or would change in check mode), when in diff mode.
    support: full
"""

    INFO_ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  diff_mode:
    description: Read-only; there is never a difference to show.
    support: none
"""
