"""Running out of memory is one line naming the file, exit 2, never "not a readable image" nor a traceback.

Under ``ulimit -v`` (or a container's limit) a 1.6 GB image that ITK reads well was "not a readable nrrd image
(Failed to allocate memory for image.)", and a numpy or torch allocation that failed in the work was a traceback.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# The child imports what reading needs, then allows itself 300 MiB more address space than it has mapped.
_LIMITED = textwrap.dedent("""
    import resource, sys
    import numpy, SimpleITK
    import medanomaly.cli.app as app, medanomaly.io.itk
    size = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (size + 300 * 2**20, resource.RLIM_INFINITY))
    sys.argv = ["medanomaly", *sys.argv[1:]]
    app.main()
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_an_image_larger_than_the_memory_left_is_named_not_called_unreadable(tmp_path, monkeypatch):
    data = tmp_path / "big.raw"
    with open(data, "wb") as handle:  # sparse: 1.6 GB of zeros that take no disk
        handle.truncate(1000 * 1000 * 800 * 2)
    header = tmp_path / "big.nhdr"
    header.write_text("NRRD0004\ntype: int16\ndimension: 3\nsizes: 1000 1000 800\nspacings: 1 1 1\n"
                      "encoding: raw\nendian: little\ndata file: big.raw\n")  # fmt: skip
    monkeypatch.setenv("MEDANOMALY_MAX_VOXEL_BYTES", "4G")  # above the image: memory, not the limit, stops it
    # one ITK thread and two malloc arenas: on a many-core machine each thread's arena reserves 64 MB of the 300
    monkeypatch.setenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    result = subprocess.run([sys.executable, "-c", _LIMITED, "info", str(header)], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {header}: not enough memory ("), result.stderr


def test_an_allocation_that_fails_outside_any_one_file_is_one_line_with_the_memory_left(monkeypatch, capsys):
    import medanomaly.cli.app as cli
    from medanomaly.io import memory

    def work() -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 2147483648 bytes. Error code 12 (Cannot allocate memory)")  # fmt: skip

    monkeypatch.setattr(cli, "app", work)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 512 * 2**20)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    lines = capsys.readouterr().err.splitlines()
    assert exited.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: not enough memory (2048 MiB could not be allocated): about 512 MiB is left")
    monkeypatch.setattr(cli, "app", lambda: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):  # any other failure stays a real failure, whole
        cli.main()


def test_an_image_whose_prediction_cannot_fit_is_refused_before_the_work(fixture_lung_run, tmp_path, monkeypatch,
                                                                         capsys):  # fmt: skip
    """In a container (a cgroup limit) the kernel kills a process that takes more than its share: a service with
    every job it held, without a word. Each task states a floor under its memory per input voxel; an image over what
    is left is refused before the model runs, and a batch goes on."""
    from medanomaly.data.sources import real_data
    from medanomaly.detect.model import DetectionModel
    from medanomaly.io import limits
    from tests.integration.conftest import run_main

    image = real_data("pyradiomics/lung1_image.nrrd")  # 48 x 512 x 512: at least 20 bytes per voxel, 240 MiB
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 100 << 20)
    monkeypatch.setattr(DetectionModel, "_predict", lambda self, volume: pytest.fail("the model ran"))
    code, out, err = run_main(monkeypatch, capsys, "predict", str(fixture_lung_run), str(image),
                              "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and out == "", out
    assert err.splitlines() == [f"error: {image}: predicting it takes at least about 240 MiB of memory but 100 "
                                "MiB is left to this process: crop or resample the image, or give the process more "
                                "memory"], err  # fmt: skip
    assert not any((tmp_path / "out").rglob("*.json"))
