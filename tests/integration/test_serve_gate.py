"""``labgate serve --gate BRANCH``: the push gate runs in the server's loop, logs structured lines,
and its flights show through the JSON API."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from test_gate import Upstream, history, write_gate_lab


def read_lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def test_serve_runs_the_gate_and_shows_its_flights(tmp_path: Path) -> None:
    upstream = Upstream(tmp_path)
    shas = history(upstream, bad_at=99, length=2)
    lab_dir = write_gate_lab(tmp_path, upstream, database=None)
    toml = lab_dir / "lab.toml"
    toml.write_text(
        toml.read_text().replace(
            'name = "gate-lab"\n', 'name = "gate-lab"\npoll_interval = 0.5\n', 1
        )
    )
    exe = Path(sys.executable).parent / "labgate"
    serve = subprocess.Popen(
        [str(exe), "serve", "--lab", str(lab_dir), "--listen", "127.0.0.1:0",
         "--gate", "xen-unstable"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    try:
        assert serve.stderr is not None
        threading.Thread(target=read_lines, args=(serve.stderr, lines), daemon=True).start()
        base = None
        cycles = []
        while len(cycles) < 2:  # the pushing cycle, then one with nothing to do
            line = lines.get(timeout=120)
            found = re.search(r"on (http://\S+?)/?$", line.strip())
            if found:
                base = found.group(1)
                continue
            if line.startswith("{"):
                event = json.loads(line)
                if event.get("event") == "gate-cycle":
                    cycles.append(event)
        assert base is not None
        assert cycles[0]["action"] == "pushed" and cycles[0]["pushed_revision"] == shas[-1]
        assert cycles[1]["action"] == "nothing-to-do"
        assert upstream.ref("master") == shas[-1]
        with urllib.request.urlopen(f"{base}/api/flights") as response:
            flights = json.loads(response.read())["items"]
        assert {f["id"] for f in flights} >= {cycles[0]["flight"], cycles[0]["baseline_flight"]}
    finally:
        serve.terminate()
        serve.wait(timeout=30)
