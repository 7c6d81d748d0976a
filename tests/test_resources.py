"""The memory bound: a container's limit, read from cgroup v2 or v1, where it is lower than the machine's memory."""

from __future__ import annotations

import pytest

from fad_edge import resources

GIB = 2**30


@pytest.mark.parametrize("v2, v1, expected", [
    ("max\n", None, "total"),  # v2, unlimited
    (f"{GIB}\n", None, GIB),  # v2, limited
    (None, f"{2 * GIB}\n", 2 * GIB),  # v1 only, limited (older Docker hosts, JetPack)
    (None, "9223372036854771712\n", "total"),  # v1 only, unlimited: a huge number
    (None, None, "total"),  # no cgroup files
])
def test_a_containers_limit_is_read_from_either_cgroup_version(tmp_path, monkeypatch, v2, v1, expected):
    paths = (tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes")
    for path, text in zip(paths, (v2, v1)):
        if text is not None:
            path.write_text(text)
    monkeypatch.setattr(resources, "CGROUP_LIMITS", paths)
    monkeypatch.setattr(resources.os, "sysconf", lambda name: {"SC_PHYS_PAGES": 4 * GIB // 4096,
                                                               "SC_PAGE_SIZE": 4096}[name])
    assert resources.memory_bytes() == (4 * GIB if expected == "total" else expected)
