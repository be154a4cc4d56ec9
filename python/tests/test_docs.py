"""The Python examples of the README and of docs/python.md are tests: each `>>>` line runs, on a
store of the seeds made by the CLI, and must print what the page shows."""

import doctest
import os
import shutil
from pathlib import Path

from test_likewise import ROOT, cli


def test_the_python_examples_of_the_documentation_run_as_shown(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "seeds", tmp_path / "seeds")
    # The pages' examples open `.likewise` in the working folder, as `likewise index seeds/` makes it,
    # and find the model where a project keeps it (models/) or in the user's cache.
    if (ROOT / "models").is_dir():
        os.symlink(ROOT / "models", tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    cli(tmp_path / ".likewise", "index", str(tmp_path / "seeds"))
    for page in ("README.md", "docs/python.md"):
        result = doctest.testfile(
            str(ROOT / page),
            module_relative=False,
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
            verbose=False,
        )
        assert result.attempted > 0, f"{page} has no example"
        assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {page} failed (printed above)"
