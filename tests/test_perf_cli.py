"""``labgate perf changepoints`` as a real process: JSON lines in, JSON lines out, each answer
flushed before the next line is read, a bad line named with exit status 2."""

from __future__ import annotations

import json
import select
import subprocess
import sys

import pytest

from labgate.perf.changepoint import change_points

CHANGEPOINTS = [sys.executable, "-m", "labgate", "perf", "changepoints"]
STEP = [100.0 + (k % 3) for k in range(30)] + [110.0 + (k % 3) for k in range(30)]
REVERTED = STEP[:40] + [100.0 + (k % 3) for k in range(30)]


def run(stdin: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHANGEPOINTS, *options], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_one_answer_per_line_as_the_library_gives() -> None:
    lines = [STEP, REVERTED, [], [1, 2, 3], [5] * 50]
    done = run("".join(json.dumps(values) + "\n" for values in lines))
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers == [[p.index for p in change_points(values)] for values in lines]
    assert answers[:2] == [[30], [30, 40]]


def test_options_reach_the_detector() -> None:
    small = [100.0 + (k % 3) for k in range(30)] + [103.0 + (k % 3) for k in range(30)]
    assert run(json.dumps(small) + "\n").stdout == "[30]\n"
    assert run(json.dumps(small) + "\n", "--min-change", "0.05").stdout == "[]\n"
    assert run(json.dumps(STEP) + "\n", "--min-segment", "31").stdout == "[]\n"


def test_each_answer_comes_before_the_next_line_is_sent() -> None:
    with subprocess.Popen(
        CHANGEPOINTS, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        for values, expected in ((STEP, "[30]\n"), (REVERTED, "[30, 40]\n")):
            process.stdin.write(json.dumps(values) + "\n")
            process.stdin.flush()
            # the process holds stdin open: only a flushed answer can arrive
            ready, _, _ = select.select([process.stdout], [], [], 30)
            assert ready, "no answer within 30 s: not flushed?"
            assert process.stdout.readline() == expected
        process.stdin.close()
        assert process.wait(timeout=30) == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("[1, 2", "stdin line 3: not JSON (Expecting ',' delimiter at column 6)"),
        ('{"values": [1]}', "stdin line 3: expected a JSON array of numbers, got dict"),
        ('[1, "2"]', 'stdin line 3: value 1 is "2", not a number'),
        ("[1, true]", "stdin line 3: value 1 is true, not a number"),
        ("[1, NaN]", "stdin line 3: value 1 is nan, not a finite number"),
        ("", "stdin line 3: empty; expected a JSON array of numbers"),
    ],
)
def test_a_bad_line_is_named_after_the_answers_before_it(line: str, message: str) -> None:
    done = run(f"{json.dumps(STEP)}\n[]\n{line}\n{json.dumps(STEP)}\n")
    assert done.returncode == 2
    assert done.stdout == "[30]\n[]\n"
    assert done.stderr == f"labgate: {message}\n"
