"""What the benchmark scripts share: the binary they run beside the module, and the CPU's name.

Imported by `python/bench_*.py` before they drop their own folder from `sys.path` (its `likewise`
is the source tree without the built extension; they use the installed module)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "target" / "release" / "likewise"


def use_installed_module(script: str) -> None:
    """Drops `script`'s folder from the import path, so `import likewise` finds the installed
    module (with its compiled extension), not the source folder beside the script."""
    here = Path(script).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]


def cpu() -> str:
    """The CPU as /proc/cpuinfo names it: model name, family and model."""
    fields = {}
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        k = k.strip()
        if k in ("model name", "cpu family", "model") and k not in fields:
            fields[k] = v.strip()
    return f"{fields.get('model name')} (family {fields.get('cpu family')}, model {fields.get('model')})"
