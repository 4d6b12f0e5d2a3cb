"""Workers forked from the nanny's zygote see the parent's import path as it is when they start."""

from __future__ import annotations

import importlib
import sys
import uuid

from twofold import Client, LocalCluster

TIMEOUT = 30


def test_a_module_on_a_path_added_after_the_zygote_started(tmp_path):
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True) as cluster:
        # the zygote is running now; a module appears on a new path entry
        name = f"zygote_probe_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text("def triple(x):\n    return 3 * x\n")
        sys.path.insert(0, str(tmp_path))
        try:
            module = importlib.import_module(name)
            # a worker started now (a restart: the nanny forks it from the same zygote)
            nanny = cluster.nannies[0]
            nanny.kill()
            with Client(cluster, set_as_default=False) as client:
                client.wait_for_workers(1, timeout=TIMEOUT)
                # pickled by reference: the worker must import the module from the new path
                assert client.submit(module.triple, 3, pure=False).result(timeout=TIMEOUT) == 9
            assert nanny.restarts == 1
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop(name, None)
