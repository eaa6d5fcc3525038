"""Client ids: random version-4 UUID strings, unique, also across the 4 KiB pools they are cut from."""

from __future__ import annotations

import os
import uuid

from trunkline.session import new_client_id


def test_client_ids_are_distinct_version_4_uuids_across_several_pools() -> None:
    ids = [new_client_id() for _ in range(1000)]  # 256 ids per pool: four refills
    assert len(set(ids)) == len(ids)
    for cid in ids:
        parsed = uuid.UUID(cid)
        assert str(parsed) == cid
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_forked_child_draws_its_own_ids() -> None:
    new_client_id()  # the parent holds a partly used pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write one id and leave at once
        os.write(write, new_client_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent_next = [new_client_id() for _ in range(300)]
    assert uuid.UUID(child).version == 4
    assert child not in parent_next
