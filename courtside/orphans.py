"""Workers end with their master.

Under ``courtside serve --workers N`` uvicorn's master process starts the workers. If the
master is killed outright (SIGKILL, the OOM killer), nothing tells them: they live on as
orphans, still holding the listening socket and their database connections, serving the
old code, and a restarted master cannot bind the port. systemd's control group cleans that
up; supervisord, a container without an init, or a shell do not. So each worker asks the
kernel (``prctl(PR_SET_PDEATHSIG)``, Linux) for a SIGTERM when its parent goes: the graceful
shutdown, in which its clients are told to reconnect.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger("courtside.serve")

MASTER_ENV = "COURTSIDE_MASTER_PID"
_PR_SET_PDEATHSIG = 1


def mark_master() -> None:
    """In the master, before the workers start: they inherit its pid through the environment."""
    os.environ[MASTER_ENV] = str(os.getpid())


def die_with_master() -> bool:
    """In a worker: SIGTERM when the master dies. False where there is no master (a single
    process serves) or the platform cannot do it."""
    raw = os.environ.get(MASTER_ENV, "")
    if not raw.isdigit() or int(raw) == os.getpid() or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): this worker would outlive "
                    "a killed master", ctypes.get_errno())
        return False
    if os.getppid() != int(raw):  # the master died before we asked
        os.kill(os.getpid(), signal.SIGTERM)
    return True
