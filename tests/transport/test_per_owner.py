"""PerOwner: a value per owner object, made once, dropped with its owner, the last owner found from a cache."""

from __future__ import annotations

import gc

from trunkline.transport.per_owner import PerOwner


class Owner:
    pass


def test_each_owner_gets_its_own_value_made_once() -> None:
    made: list[list[int]] = []

    def make() -> list[int]:
        made.append([])
        return made[-1]

    per_owner: PerOwner[Owner, list[int]] = PerOwner(make)
    a, b = Owner(), Owner()
    assert per_owner.get(a) is None and not made  # get never makes
    first = per_owner(a)
    assert per_owner(a) is first and per_owner.get(a) is first
    second = per_owner(b)
    assert second is not first and len(made) == 2
    assert per_owner(a) is first and per_owner.get(b) is second  # not only the last owner asked about
    assert len(made) == 2


def test_a_value_goes_with_its_owner() -> None:
    per_owner: PerOwner[Owner, list[int]] = PerOwner(list)
    a, b = Owner(), Owner()
    per_owner(a).append(1)
    per_owner(b)  # b is now the cached owner: a is held by nothing but the weak table
    del a
    gc.collect()
    assert len(per_owner._values) == 1
    del b
    gc.collect()
    fresh = Owner()
    assert per_owner.get(fresh) is None  # a dead cached owner is never mistaken for a new one
    assert per_owner(fresh) == []
