"""LDAP logins against a real slapd on loopback (tests/integration/slapd.py): a web login with an
LDAP password makes the local record, a wrong one is refused, `manage addldapuser` makes the
record ahead of the first login, and with the directory down the error names its URL while
local users still log in."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import WsgiClient
from slapd import USERS, slapd  # noqa: F401 (the fixture)
from webkit import Browser

import factories
from dutlab.service.config import LdapSettings
from dutlab.service.models import GroupMember, User
from labkit import LabServer


@pytest.fixture
def ldap_app(db, settings, slapd):  # noqa: F811
    """The server's app in process with `ldap` pointing at the slapd; a local user alice."""
    from dutlab.service.app import make_app

    factories.user("alice")
    return WsgiClient(make_app(dataclasses.replace(settings, ldap=LdapSettings(**slapd.settings()))), "")


def test_an_ldap_password_logs_in_and_makes_the_local_record(ldap_app):
    browser = Browser(ldap_app)
    assert User.get_or_none(User.username == "ldapuser") is None
    answer = browser.login("ldapuser", USERS["ldapuser"][0])
    assert answer.headers["Location"].endswith("/")
    assert '<span id="whoami">ldapuser</span>' in browser.get("/").text
    user = User.get(User.username == "ldapuser")
    assert (user.email, user.full_name, user.is_superuser) == ("lea@lab.example", "Lea Dap", False)
    # the LDAP group maps to a dutlab group at each login
    dora = Browser(ldap_app)
    dora.login("dora", USERS["dora"][0])
    groups = [m.group.name for m in GroupMember.select().where(GroupMember.user == User.get(User.username == "dora"))]
    assert groups == ["lab-admins"]
    # the API's password login asks the directory too
    token = ldap_app.api("POST", "/api/v1/tokens", {"username": "dora", "password": USERS["dora"][0]}, token=None)
    assert token.status in (200, 201), token.text


def test_a_wrong_ldap_password_and_an_unknown_name_are_refused(ldap_app):
    for name, password in (("ldapuser", "not-the-password"), ("ldapuser", ""), ("nobody", "ldap-secret"),
                           ("ldapuser", USERS["dora"][0])):
        browser = Browser(ldap_app)
        answer = browser.post("/accounts/login/", {"username": name, "password": password},
                              csrf_from="/accounts/login/")
        assert answer.status == 401 and "Wrong user name or password" in answer.text, (name, answer.text[:300])
        assert "dutlab_session" not in browser.cookies
    assert User.get_or_none(User.username == "nobody") is None
    # a local password never goes to LDAP: alice logs in with hers, not with an LDAP one
    assert Browser(ldap_app).post("/accounts/login/", {"username": "alice", "password": "ldap-secret"},
                                  csrf_from="/accounts/login/").status == 401
    Browser(ldap_app).login("alice", "pw")


def test_ldap_down_names_the_url_and_local_users_still_log_in(ldap_app, slapd):  # noqa: F811
    slapd.stop()
    browser = Browser(ldap_app)
    answer = browser.post("/accounts/login/", {"username": "ldapuser", "password": USERS["ldapuser"][0]},
                          csrf_from="/accounts/login/")
    assert answer.status == 503, answer.text[:500]
    assert slapd.uri in answer.text and "Local users can still log in" in answer.text
    assert "dutlab_session" not in browser.cookies
    local = Browser(ldap_app)
    local.login("alice", "pw")
    assert '<span id="whoami">alice</span>' in local.get("/").text


def test_manage_addldapuser_makes_the_record_before_the_first_login(tmp_path, slapd):  # noqa: F811
    lab = LabServer.create(tmp_path / "lab", settings={"ldap": slapd.settings()})
    lab.bootstrap()
    out = lab.manage("addldapuser", "--username", "dora")
    assert "user 'dora' added from LDAP (Dora Explorer, dora@lab.example)" in out.stdout
    again = lab.manage("users", "addldapuser", "--username", "ldapuser")  # LAVA's spelling under `users`
    assert "user 'ldapuser' added from LDAP" in again.stdout
    listed = lab.manage("users", "list", "--json").stdout
    assert '"dora@lab.example"' in listed and '"lab-admins"' in listed
    unknown = lab.manage("addldapuser", "--username", "nobody", check=False)
    assert unknown.returncode == 1 and "no LDAP entry for 'nobody'" in unknown.stderr
    local = lab.manage("createsuperuser", "--username", "root2", "--passwd", "root-pw")
    assert "superuser 'root2' created" in local.stdout
    taken = lab.manage("addldapuser", "--username", "root2", check=False)
    assert taken.returncode == 1 and "local password" in taken.stderr
    slapd.stop()
    down = lab.manage("addldapuser", "--username", "ldapuser", check=False)
    assert down.returncode == 1 and slapd.uri in down.stderr, down.stderr
