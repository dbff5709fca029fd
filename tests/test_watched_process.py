"""The tests' own waiting: a child that works silently on a loaded machine is waited for; one that stops
working (a sleep standing in for a deadlock) fails its test instead of hanging the suite."""
import sys

import pytest

from conftest import WatchedProcess, machine_slowness, run_child


def test_a_silent_child_that_keeps_working_is_waited_for():
    # silent for about four stall intervals, but spending CPU all along (as a render on a busy machine does)
    busy = ("import time\nend = time.monotonic() + 4 * {stall}\nwhile time.monotonic() < end:\n    sum(range(1000))\n"
            "print('done', flush=True)\n")
    stall = 1.0
    with WatchedProcess([sys.executable, "-c", busy.format(stall=stall * machine_slowness())], stall=stall) as child:
        assert child.wait_for(lambda line: line.strip() == "done") == "done\n"
        assert child.finish()[0] == 0


def test_a_child_that_stops_working_fails_the_wait_and_is_killed():
    with WatchedProcess([sys.executable, "-c", "import time\nprint('started', flush=True)\ntime.sleep(3600)"],
                        stall=1.0) as child:
        assert child.wait_for(lambda line: "started" in line)
        with pytest.raises(AssertionError, match="no CPU time spent"):
            child.wait_for(lambda line: False)
        assert child.proc.wait(timeout=60) != 0  # killed, not left running


def test_a_child_that_spins_past_the_outer_bound_fails():
    with WatchedProcess([sys.executable, "-c", "while True:\n    pass"], stall=1.0, limit=3) as child:
        with pytest.raises(AssertionError, match="outer bound"):
            child.finish()


def test_run_child_captures_both_streams_and_the_exit_code():
    result = run_child([sys.executable, "-c", "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)"])
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    merged = run_child([sys.executable, "-c", "import sys\nprint('out', flush=True)\nprint('err', file=sys.stderr)"],
                       merge_stderr=True)
    assert merged.returncode == 0 and merged.stderr is None and sorted(merged.stdout.split()) == ["err", "out"]
