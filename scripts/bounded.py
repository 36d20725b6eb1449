"""Run a command with a time limit, portably (GNU ``timeout`` is not on macOS or BSD)::

    python scripts/bounded.py [--signal INT] [--kill-after 60] SECONDS -- COMMAND [ARG...]

After SECONDS the command's process group gets the signal (INT: pytest then prints the
traceback of where it stood), and SIGKILL if it still runs KILL_AFTER seconds later. The
exit status is the command's, or 124 on a timeout, as GNU ``timeout`` does.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

TIMED_OUT = 124


def run(argv: list[str], seconds: float, sig: int, kill_after: float) -> int:
    try:
        proc = subprocess.Popen(argv, start_new_session=True)
    except FileNotFoundError:
        print(f"bounded.py: {argv[0]}: command not found", file=sys.stderr)
        return 127
    # Ctrl-C on the terminal reaches us only (the command is in its own session): pass it on.
    signal.signal(signal.SIGINT, lambda *_: os.killpg(proc.pid, signal.SIGINT))
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(proc.pid, signal.SIGTERM))
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        print(f"bounded.py: {argv[0]} still running after {seconds:.0f}s: sending {signal.Signals(sig).name}",
              file=sys.stderr)
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return TIMED_OUT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", default="TERM", help="signal name sent at the limit (default TERM)")
    parser.add_argument("--kill-after", type=float, default=60.0, help="seconds before SIGKILL (default 60)")
    parser.add_argument("seconds", type=float)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (bounded.py SECONDS -- COMMAND ...)")
    sys.exit(run(command, args.seconds, getattr(signal, "SIG" + args.signal.upper().removeprefix("SIG")),
                 args.kill_after))


if __name__ == "__main__":
    main()
