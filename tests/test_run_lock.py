"""One live run per run directory: a second one is refused naming the first; a dead one's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flash_exp.training.run_lock import LOCK_FILE, RunDirectoryLocked, acquire, release
from tests.conftest import REPO

HOLD = "import sys; from pathlib import Path; from flash_exp.training.run_lock import acquire; " \
       "acquire(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()"


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of ``tmp_path/run`` until the test ends."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    yield run, proc
    proc.stdin.close()
    proc.wait(timeout=30)


def test_a_second_run_is_refused_naming_the_first_and_its_hydra_files_are_kept(holder):
    run, proc = holder
    (run / ".hydra" / "overrides.yaml").write_text("- seed=2\n")  # what Hydra writes for the second run
    with pytest.raises(RunDirectoryLocked, match=f"PID {proc.pid} on host {socket.gethostname()}"):
        acquire(run)
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- seed=1\n"


def test_the_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    fd = acquire(tmp_path)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    release(tmp_path, fd)
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_train_command_refuses_a_directory_in_use(holder):
    run, proc = holder
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flash_exp.train", "data.shards=[x]", f"hydra.run.dir={run}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"PID {proc.pid} on host" in done.stderr, done.stderr[-2000:]
    assert not (run / "FAILED").exists() and (run / ".hydra" / "overrides.yaml").read_text() == "- seed=1\n"
    assert time.monotonic() - start < 60
    assert Path(run / LOCK_FILE).is_file()
