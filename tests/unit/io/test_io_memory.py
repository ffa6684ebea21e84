"""The memory a process may still take: a container's cgroup limit and ``ulimit -v`` count, not only the machine's.

Before, the checks made before the work (training scans, weights, phantom cohorts) compared their needs with the
machine's ``MemAvailable`` alone: in a container held to 4 GiB on a 256 GiB host the work passed them and the kernel
killed the process (exit 137, not a word); under ``ulimit -v`` it died in a traceback.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from medanomaly.errors import InputError, about_file, out_of_memory
from medanomaly.io import memory

GIB = 1 << 30


def _v2_limits(folder: Path, limit: str, current: int, inactive: int = 0) -> None:
    (folder / "memory.max").write_text(limit + "\n")
    (folder / "memory.current").write_text(f"{current}\n")
    (folder / "memory.stat").write_text(f"anon {current}\ninactive_file {inactive}\nactive_file 0\n")


def test_cgroup_v2_limit_less_working_set_tightest_of_its_ancestors(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/kubepods/pod1/ctr\n")
    root = tmp_path / "sys"
    pod, ctr = root / "kubepods" / "pod1", root / "kubepods" / "pod1" / "ctr"
    ctr.mkdir(parents=True)
    _v2_limits(root / "kubepods", "max", 50 * GIB)  # no limit at this level
    _v2_limits(pod, str(3 * GIB), 2 * GIB, inactive=GIB // 2)  # pod: 3 GiB, 1.5 GiB working set -> 1.5 GiB left
    _v2_limits(ctr, str(4 * GIB), 2 * GIB)  # the container alone would leave 2 GiB
    assert memory.cgroup_headroom(proc, root) == 3 * GIB - (2 * GIB - GIB // 2)


def test_cgroup_v2_seen_from_inside_its_namespace_and_without_a_limit(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("0::/\n")  # a container with its own cgroup namespace: its cgroup is the mount's root
    root = tmp_path / "sys"
    root.mkdir()
    _v2_limits(root, str(GIB), GIB // 4)
    assert memory.cgroup_headroom(proc, root) == GIB - GIB // 4
    _v2_limits(root, "max", GIB // 4)
    assert memory.cgroup_headroom(proc, root) is None


def test_cgroup_v1_memory_controller_and_its_unlimited_value(tmp_path):
    proc = tmp_path / "cgroup"
    proc.write_text("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    mount = tmp_path / "sys" / "memory"
    ctr = mount / "docker" / "abc"
    ctr.mkdir(parents=True)
    (mount / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # the kernel's "unlimited"
    (mount / "memory.usage_in_bytes").write_text(str(9 * GIB))
    (ctr / "memory.limit_in_bytes").write_text(str(2 * GIB))
    (ctr / "memory.usage_in_bytes").write_text(str(GIB))
    (ctr / "memory.stat").write_text(f"cache 0\ntotal_inactive_file {GIB // 2}\n")
    assert memory.cgroup_headroom(proc, tmp_path / "sys") == 2 * GIB - GIB // 2


def test_no_cgroup_information_is_no_limit(tmp_path):
    assert memory.cgroup_headroom(tmp_path / "missing", tmp_path) is None
    proc = tmp_path / "cgroup"
    proc.write_text("0::/a/b\n")
    assert memory.cgroup_headroom(proc, tmp_path / "nothing-mounted") is None


def test_address_space_limit_less_the_process_size(tmp_path, monkeypatch):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmSize:\t 1048576 kB\nVmData:\t  262144 kB\n")
    limits = {resource.RLIMIT_AS: (3 * GIB, resource.RLIM_INFINITY), resource.RLIMIT_DATA: (resource.RLIM_INFINITY,) * 2}
    monkeypatch.setattr(resource, "getrlimit", lambda kind: limits.get(kind, (resource.RLIM_INFINITY,) * 2))
    assert memory.rlimit_headroom(status) == 2 * GIB  # 3 GiB less the 1 GiB already mapped
    limits[resource.RLIMIT_DATA] = (GIB, resource.RLIM_INFINITY)
    assert memory.rlimit_headroom(status) == GIB - GIB // 4  # the data limit is the tighter
    limits.clear()
    assert memory.rlimit_headroom(status) is None


def test_available_memory_is_the_least_of_the_three(monkeypatch):
    monkeypatch.setattr(memory, "system_available", lambda: 20 * GIB)
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: 3 * GIB)
    monkeypatch.setattr(memory, "rlimit_headroom", lambda: None)
    assert memory.available_memory_bytes() == 3 * GIB
    monkeypatch.setattr(memory, "rlimit_headroom", lambda: -5)  # already past a limit
    assert memory.available_memory_bytes() == 0
    for name in ("system_available", "cgroup_headroom", "rlimit_headroom"):
        monkeypatch.setattr(memory, name, lambda: None)
    assert memory.available_memory_bytes() is None


def test_the_checks_before_the_work_see_a_containers_limit(monkeypatch):
    from medanomaly.io.limits import memory_shortfall

    monkeypatch.setattr(memory, "system_available", lambda: 200 * GIB)
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: 2 * GIB)
    assert memory_shortfall(4 * GIB, 0.8) == 2 * GIB  # refused: the host's 200 GiB are not this process's


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (MemoryError("Unable to allocate 150. MiB for an array with shape (600, 512, 512) and data type bool"),
         "not enough memory (150 MiB could not be allocated)"),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                      "tried to allocate 1600000000 bytes. Error code 12 (Cannot allocate memory)"),
         "not enough memory (1526 MiB could not be allocated)"),
        (RuntimeError("Exception thrown in SimpleITK new_Image: itkImportImageContainer.hxx:179:\nFailed to allocate "
                      "memory for image."), "not enough memory (an allocation failed)"),
        (MemoryError(), "not enough memory (an allocation failed)"),
    ],
)  # fmt: skip
def test_allocation_failures_of_numpy_torch_and_itk_read_as_one_reason(error, reason):
    assert out_of_memory(error) == reason


def test_an_allocation_that_fails_on_one_file_names_it_and_lets_its_arrays_go():
    import gc
    import weakref

    import numpy as np

    class Big(np.ndarray):
        pass

    held: list[weakref.ref] = []

    def work() -> None:
        array = np.zeros(10).view(Big)
        held.append(weakref.ref(array))
        raise MemoryError("Unable to allocate 2.00 GiB for an array with shape (1024, 1024, 512)")

    with pytest.raises(InputError) as caught:
        with about_file("scan.nrrd"):
            work()
    gc.collect()
    assert str(caught.value) == "scan.nrrd: not enough memory (2.00 GiB could not be allocated)"
    assert held[0]() is None  # a batch goes on to the next file without the failed one's arrays
    with pytest.raises(RuntimeError, match="shape mismatch"), about_file("scan.nrrd"):
        raise RuntimeError("shape mismatch")  # any other error is left alone
