"""The multilingual whisper model is joined once per cache directory, safely when processes share that directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aybiza.processors.packaged import WHISPER_BASE, joined_dir, sha256_of

ROOT = Path(__file__).resolve().parents[2]
JOIN = "import sys; from pathlib import Path; from aybiza.processors.packaged import WHISPER_BASE, joined_dir; " \
       "print(joined_dir(WHISPER_BASE, Path(sys.argv[1])))"


def test_processes_joining_into_one_directory_at_once_each_get_the_whole_model(tmp_path: Path) -> None:
    children = [subprocess.Popen([sys.executable, "-c", JOIN, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [child.communicate(timeout=120) for child in children]
    assert all(child.returncode == 0 for child in children), [err for _, err in results]
    directory = Path(results[0][0].strip())
    assert {Path(out.strip()) for out, _ in results} == {directory}
    name, expected = WHISPER_BASE.joined
    assert sha256_of(directory / name) == expected
    assert sorted(p.name for p in directory.iterdir()) == sorted([name, *(f for f, _ in WHISPER_BASE.extras.files)])


def test_a_damaged_extra_file_is_copied_again(tmp_path: Path) -> None:
    directory = joined_dir(WHISPER_BASE, tmp_path)
    (directory / "config.json").write_text("{")
    assert joined_dir(WHISPER_BASE, tmp_path) == directory
    assert sha256_of(directory / "config.json") == dict(WHISPER_BASE.extras.files)["config.json"]
