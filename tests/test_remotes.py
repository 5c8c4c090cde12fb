"""`labgate check` checks what lab.toml names outside itself: tree urls and the refs branches
name, each problem with its key path and a fix."""

from __future__ import annotations

import subprocess
from pathlib import Path

from labgate.config import load_lab
from labgate.remotes import check_remotes
from labs import job, labgate, step, toml_str, write_lab


def test_a_lab_whose_trees_and_refs_exist_has_no_problem(tmp_path: Path) -> None:
    lab_dir = write_lab(
        tmp_path / "lab", trees={"xen": {"V": "1\n"}}, jobs=job("j", step("s", "true"))
    )
    assert check_remotes(load_lab(lab_dir.path)) == []


def test_a_missing_url_and_refs_that_name_nothing_are_named_with_their_keys(
    tmp_path: Path,
) -> None:
    lab_dir = write_lab(
        tmp_path / "lab",
        trees={"xen": {"V": "1\n"}, "lib": {"L": "1\n"}},
        jobs=job("j", step("s", "true")),
    )
    lab_dir.trees["lib"].git("tag", "v1")
    text = lab_dir.toml.read_text().replace(
        'tree = "xen"\n', 'tree = "xen"\ntested = "released"\npin = { lib = "v9", gone = "x" }\n', 1
    )
    gone = tmp_path / "nowhere.git"
    text += f'\n[[tree]]\nname = "gone"\nurl = {toml_str(str(gone))}\n'
    lab_dir.toml.write_text(text)
    problems = check_remotes(load_lab(lab_dir.path))
    where = {p.key: p for p in problems}
    assert set(where) == {"tree[2].url", "branch[0].tested", "branch[0].pin.lib"}
    assert str(gone) in where["tree[2].url"].message
    assert where["branch[0].tested"].message == (
        "'released': no such branch, tag or ref in tree 'xen' (branch main)"
    )
    assert "use one of its branches (master, staging)" in (where["branch[0].tested"].fix or "")
    assert "'v9'" in where["branch[0].pin.lib"].message
    assert all("--offline" in (p.fix or "") for p in problems)
    # a tag, a full ref or a commit sha is a fine pin
    for pin in ("v1", "refs/tags/v1", lab_dir.trees["lib"].rev("HEAD")):
        lab_dir.toml.write_text(text.replace('lib = "v9"', f"lib = {toml_str(pin)}"))
        keys = {p.key for p in check_remotes(load_lab(lab_dir.path))}
        assert "branch[0].pin.lib" not in keys


def test_check_refuses_what_it_cannot_reach_unless_offline(tmp_path: Path) -> None:
    lab_dir = write_lab(
        tmp_path / "lab", trees={"xen": {"V": "1\n"}}, jobs=job("j", step("s", "true"))
    )
    text = lab_dir.toml.read_text().replace('tree = "xen"\n', 'tree = "xen"\nstaging = "nope"\n')
    lab_dir.toml.write_text(text)
    online = subprocess.run(labgate(lab_dir.path, "check"), capture_output=True, text=True)
    assert online.returncode == 2, online.stdout + online.stderr
    assert online.stderr.startswith(f"labgate: {lab_dir.toml}: branch[0].staging: 'nope': ")
    assert "Traceback" not in online.stderr
    offline = subprocess.run(
        labgate(lab_dir.path, "check", "--offline"), capture_output=True, text=True
    )
    assert offline.returncode == 0, offline.stdout + offline.stderr
