from __future__ import annotations

import os

import pytest
from hypothesis import settings

# CI runs the property tests with a fixed seed sequence and no per-example
# deadline, so a landing never depends on a lucky draw or on machine load;
# local runs keep exploring new examples.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep ``@pytest.mark.xdist_group`` working under pytest 9.

    With ``--dist loadgroup``, pytest-xdist (3.8) sends tests of one group to
    one worker by appending ``@<group>`` to ``item._nodeid``; pytest 9 keeps
    node ids in ``item._id``, so that suffix is lost and grouped tests run on
    several workers at once.  Add the suffix where pytest 9 reads it (nothing
    to do when xdist's own suffix took effect, or without loadgroup)."""
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # an older pytest: xdist's own mechanism works
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if not names or not hasattr(item, "_id"):
            continue
        suffix = "@" + "_".join(names)
        if not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)
