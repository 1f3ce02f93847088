"""A real OpenLDAP slapd for the LDAP login tests: its own directory under a temp dir, a small
tree loaded by slapadd, listening on 127.0.0.1 only, stopped by its PID (labkit.procs)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labkit import Procs, free_port

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
SCHEMA = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")

BASE = "dc=lab,dc=example"
PEOPLE = f"ou=people,{BASE}"
ADMIN_DN = f"cn=admin,{BASE}"
ADMIN_PW = "directory-pw"
#: LDAP users: uid -> (password, cn, mail)
USERS = {"ldapuser": ("ldap-secret", "Lea Dap", "lea@lab.example"),
         "dora": ("dora-secret", "Dora Explorer", "dora@lab.example")}
ADMINS_GROUP = f"cn=lab-admins,ou=groups,{BASE}"

CONFIG = """\
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
pidfile {root}/slapd.pid
modulepath {modules}
moduleload back_mdb
database mdb
suffix "{base}"
rootdn "{admin}"
rootpw {admin_pw}
directory {root}/db
maxsize 10485760
access to attrs=userPassword by anonymous auth by self write by * none
access to * by * read
"""


def ldif() -> str:
    parts = [f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: lab\no: Lab\n",
             f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
             f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n"]
    for uid, (password, cn, mail) in USERS.items():
        parts.append(f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\n"
                     f"sn: {cn.split()[-1]}\nmail: {mail}\nuserPassword: {password}\n")
    parts.append(f"dn: {ADMINS_GROUP}\nobjectClass: groupOfNames\ncn: lab-admins\nmember: uid=dora,{PEOPLE}\n")
    return "\n".join(parts)


def missing() -> str:
    for path in (SLAPD, SLAPADD, SCHEMA / "inetorgperson.schema", MODULES / "back_mdb.so"):
        if not path.exists():
            return f"{path} is missing (apt-get install slapd)"
    return ""


@dataclass
class Slapd:
    root: Path
    port: int = 0
    procs: Procs = field(default_factory=Procs)

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def settings(self) -> dict:
        """server.yaml's `ldap` section for this directory (searching as its admin)."""
        return {"uri": self.uri, "bind_dn": ADMIN_DN, "bind_password": ADMIN_PW, "user_search_base": PEOPLE,
                "groups": {ADMINS_GROUP: "lab-admins"}, "timeout": 3}

    def prepare(self) -> None:
        (self.root / "db").mkdir(parents=True, exist_ok=True)
        conf = self.root / "slapd.conf"
        conf.write_text(CONFIG.format(schema=SCHEMA, root=self.root, modules=MODULES, base=BASE,
                                      admin=ADMIN_DN, admin_pw=ADMIN_PW))
        (self.root / "tree.ldif").write_text(ldif())
        done = subprocess.run([str(SLAPADD), "-f", str(conf), "-l", str(self.root / "tree.ldif")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"slapadd failed: {done.stdout}{done.stderr}"

    def start(self, timeout: float = 20) -> None:
        self.port = self.port or free_port()
        # -d 0: stay in the foreground (our child, stopped by PID) and log nothing extra
        self.procs.spawn("slapd", [str(SLAPD), "-h", f"{self.uri}/", "-f", str(self.root / "slapd.conf"), "-d", "0"],
                         self.root / "slapd.log", env=dict(os.environ))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs.popen("slapd").poll() is not None:
                raise AssertionError(f"slapd exited: {(self.root / 'slapd.log').read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"slapd did not listen on {self.uri} in {timeout:.0f}s")

    def stop(self) -> None:
        if "slapd" in self.procs:
            self.procs.stop("slapd")


@pytest.fixture
def slapd(tmp_path):
    """A running slapd with USERS under PEOPLE; with CI=true a missing slapd fails the test."""
    why = missing()
    if why:
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    server = Slapd(tmp_path / "slapd")
    server.prepare()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root / "db", ignore_errors=True)
