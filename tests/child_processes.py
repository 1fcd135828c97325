"""Children that take Ctrl-C as a program started in a terminal does.

A shell without job control (a script, CI, `cmd &`) starts background commands with SIGINT
ignored, and children inherit that: Python then installs no KeyboardInterrupt handler, and a
test's SIGINT would wait out its timeout instead of testing segcli's interrupt handling.
"""

from __future__ import annotations

import signal
from collections.abc import Callable


def takes_ctrl_c(then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A `preexec_fn` that gives the child SIGINT's default action back (and runs `then`)."""

    def prepare() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if then is not None:
            then()

    return prepare
