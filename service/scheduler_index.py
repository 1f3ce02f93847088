"""The free devices of one pass, indexed so that a queued job finds its device in O(1) amortised.

Per device type, the free devices keep the pass's (shuffled) order, and each one is a bit in that
order: a job's fitting devices are the AND of a few masks (not yet taken, not held for a waiting
group, its worker has a free slot, carries all the job's tags, the submitter may use it, the
pinned device), and its device is the lowest set bit, the same device the first-fit scan over
the list picked. Masks per tag set and per submitter are built once a pass, from per-tag and
per-owner masks, so a job costs a handful of integer operations however many devices are free.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime


@dataclass(eq=False, slots=True)
class FreeDevice:
    """An Idle device as the pass sees it: the columns the rules read, no model instance."""

    id: int
    device_type_id: int
    worker_id: int
    health: int
    last_health_report_job_id: int | None
    owner_user_id: int | None
    owner_group_id: int | None
    last_report_time: datetime | None = None  # submit time of its last health report job
    tags: frozenset[int] = frozenset()


@dataclass(slots=True)
class Submitter:
    """What device ownership asks of a submitter (auth.may_submit_to)."""

    id: int
    is_active: bool
    is_superuser: bool


class _Type:
    """The free devices of one device type, as bits in the pass's order."""

    __slots__ = ("order", "bit", "untaken", "held", "no_slot", "by_worker", "by_tag", "unrestricted",
                 "by_owner_user", "by_owner_group", "tag_masks", "user_masks")

    def __init__(self) -> None:
        self.order: list[FreeDevice] = []
        self.bit: dict[int, int] = {}  # device id -> its bit
        self.untaken = 0
        self.held = 0
        self.no_slot = 0  # devices whose worker has no free slot left
        self.by_worker: dict[int, int] = defaultdict(int)
        self.by_tag: dict[int, int] = defaultdict(int)
        self.unrestricted = 0
        self.by_owner_user: dict[int, int] = defaultdict(int)
        self.by_owner_group: dict[int, int] = defaultdict(int)
        self.tag_masks: dict[frozenset[int], int] = {}
        self.user_masks: dict[int, int] = {}


class FreeIndex:
    def __init__(self, devices: list[FreeDevice], capacity: dict[int, int], device_tags: dict[int, set[int]],
                 users: dict[int, Submitter], memberships: dict[int, set[int]]) -> None:
        self.capacity = capacity
        self.users = users
        self.memberships = memberships
        self.types: dict[int, _Type] = defaultdict(_Type)
        for device in devices:
            t = self.types[device.device_type_id]
            bit = 1 << len(t.order)
            t.order.append(device)
            t.bit[device.id] = bit
            t.untaken |= bit
            t.by_worker[device.worker_id] |= bit
            if capacity.get(device.worker_id, 0) <= 0:
                t.no_slot |= bit
            for tag in device_tags.get(device.id, ()):
                t.by_tag[tag] |= bit
            if device.owner_user_id is None and device.owner_group_id is None:
                t.unrestricted |= bit
            else:
                if device.owner_user_id is not None:
                    t.by_owner_user[device.owner_user_id] |= bit
                if device.owner_group_id is not None:
                    t.by_owner_group[device.owner_group_id] |= bit
        self.types = dict(self.types)
        self._open = {type_id for type_id, t in self.types.items() if t.untaken & ~t.no_slot}

    def _tag_mask(self, t: _Type, tags: frozenset[int]) -> int:
        mask = t.tag_masks.get(tags)
        if mask is None:
            mask = (1 << len(t.order)) - 1
            for tag in tags:
                mask &= t.by_tag.get(tag, 0)
            t.tag_masks[tags] = mask
        return mask

    def _user_mask(self, t: _Type, user_id: int) -> int:
        mask = t.user_masks.get(user_id)
        if mask is None:
            user = self.users.get(user_id)
            if user is None or not user.is_active:
                mask = 0
            elif user.is_superuser:
                mask = (1 << len(t.order)) - 1
            else:
                mask = t.unrestricted | t.by_owner_user.get(user_id, 0)
                for group in self.memberships.get(user_id, ()):
                    mask |= t.by_owner_group.get(group, 0)
            t.user_masks[user_id] = mask
        return mask

    def first_fit(self, device_type_id: int, submitter_id: int, tags: frozenset[int],
                  requested_device_id: int | None) -> FreeDevice | None:
        """The first free device (in the pass's order) that the job may take now, or None."""
        t = self.types.get(device_type_id)
        if t is None:
            return None
        mask = t.untaken & ~t.held & ~t.no_slot
        if mask and requested_device_id is not None:
            mask &= t.bit.get(requested_device_id, 0)
        if mask and tags:
            mask &= self._tag_mask(t, tags)
        if mask:
            mask &= self._user_mask(t, submitter_id)
        if not mask:
            return None
        return t.order[(mask & -mask).bit_length() - 1]

    def take(self, device: FreeDevice) -> None:
        """`device` got a job: it is no longer free, and its worker has one slot less."""
        t = self.types[device.device_type_id]
        t.untaken &= ~t.bit[device.id]
        self.capacity[device.worker_id] -= 1
        if self.capacity[device.worker_id] <= 0:
            for other in self.types.values():
                other.no_slot |= other.by_worker.get(device.worker_id, 0)
            self._recheck(self.types)
        else:
            self._recheck([device.device_type_id])

    def hold(self, device_ids: set[int]) -> None:
        for t in self.types.values():
            for device_id in device_ids:
                t.held |= t.bit.get(device_id, 0)
        self._recheck(self.types)

    def _recheck(self, type_ids) -> None:
        for type_id in type_ids:
            t = self.types[type_id]
            if not t.untaken & ~t.held & ~t.no_slot:
                self._open.discard(type_id)

    def any_open(self) -> bool:
        """Some free device could still take a job: not taken, not held, its worker has a slot."""
        return bool(self._open)

    def open_types(self) -> set[int]:
        return set(self._open)

    def free_lists(self) -> dict[int, list[FreeDevice]]:
        """The untaken devices per type in the pass's order (what MultiNode planning reads)."""
        out = {}
        for type_id, t in self.types.items():
            out[type_id] = [d for i, d in enumerate(t.order) if t.untaken >> i & 1]
        return out
