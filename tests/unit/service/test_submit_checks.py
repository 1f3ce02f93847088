"""The submit-time device check (LAVA's "some device may run this job"): its verdicts, and a
fixed number of queries whatever the number of devices of the type."""

from __future__ import annotations

from test_page_queries import counting

import factories
from dutlab.service.errors import ApiError
from dutlab.service.lab.submissions import check_definition
from dutlab.service.models import Device, DeviceType, Group, Worker
from dutlab.service.states import DeviceHealth


def verdict(user, text, settings) -> tuple[int, str | None, str] | None:
    try:
        check_definition(user, text, settings)
    except ApiError as exc:
        return exc.status, exc.path, exc.message
    return None


def add_devices(first: int, n: int) -> None:
    """Devices of type qemu: half owned by group 'team', every third tagged 'usb'."""
    dtype, worker, team = DeviceType.get(), Worker.get(), Group.get(Group.name == "team")
    for i in range(first, first + n):
        factories.device(f"qemu{i:03}", dtype, worker, tags=("usb",) if i % 3 == 0 else (),
                         owner_group=team if i % 2 == 0 else None)


def test_verdicts_and_queries_do_not_depend_on_the_number_of_devices(db, settings):
    dtype = factories.device_type("qemu")
    worker = factories.worker("w1")
    alice, bob = factories.user("alice"), factories.user("bob")
    factories.group("team", alice)
    factories.device("retired", dtype, worker, health=DeviceHealth.RETIRED, tags=("usb", "hdmi"))
    usb = factories.job_text(extra="tags: [usb]")
    counts = []
    for first, n in ((0, 6), (6, 54)):
        add_devices(first, n)
        verdict(alice, usb, settings), verdict(bob, usb, settings)  # warm the caches (templates, pipelines)
        for user in (alice, bob):
            with counting() as seen:
                assert verdict(user, usb, settings) is None  # bob: qemu003 is tagged and not owned
            counts.append(len(seen))
    assert counts[:2] == counts[2:], "6 and 60 devices: the same number of queries"
    assert verdict(bob, factories.job_text(extra="tags: [usb, hdmi]"), settings)[:2] == (400, "tags")
    assert verdict(alice, factories.job_text(extra="tags: [nope]"), settings)[:2] == (400, "tags[0]")  # no such tag
    # every device owned by the team: bob may use none of them, alice may
    Device.update(owner_group=Group.get(Group.name == "team")).execute()
    assert verdict(bob, usb, settings)[:2] == (400, "tags")
    status, path, message = verdict(bob, factories.job_text(), settings)
    assert status == 403 and "restricted to other owners" in message
    assert verdict(alice, factories.job_text(), settings) is None
    Device.update(health=DeviceHealth.RETIRED).execute()
    assert verdict(alice, factories.job_text(), settings)[:2] == (400, "device_type")
