"""Does this interpreter's environment hold exactly the versions of the lock?

``python scripts/venvcheck.py [LOCK]`` (default: ``constraints.txt`` beside ``scripts/``)
prints each difference and exits 1 if there is any, 0 if none. ``scripts/_env.sh`` runs
it with the ``.venv``'s python before every use and re-installs on a difference, so a
``.venv`` whose versions differ from the lock is never used.

A difference: an installed distribution the lock does not list, or one at another
version than the lock's (the package itself, installed from the checkout, excepted).
Lock entries that are not installed are no difference: the demo installs fewer than
the tests.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

SELF = "livecommerce"
LOCK = Path(__file__).resolve().parent.parent / "constraints.txt"


def normalize(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(text: str) -> dict[str, str]:
    """``name==version`` lines (comments and blank lines skipped) as a dict.

    Raises:
        ValueError: a line that is not an exact pin.
    """
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"not an exact pin: {raw!r}")
        pins[normalize(name.strip())] = version.strip()
    return pins


def differences(lock: dict[str, str], installed: dict[str, str]) -> list[str]:
    """What ``installed`` (name -> version) has that ``lock`` does not, one line each."""
    out = []
    for name, version in sorted(installed.items()):
        key = normalize(name)
        if key == SELF:
            continue
        want = lock.get(key)
        if want is None:
            out.append(f"{name} {version} is installed but not in the lock")
        elif want != version:
            out.append(f"{name} {version} is installed, the lock says {want}")
    return out


def installed_here() -> dict[str, str]:
    """Every distribution this interpreter sees, name -> version."""
    return {d.metadata["Name"]: d.version for d in metadata.distributions() if d.metadata["Name"]}


def main(argv: list[str]) -> int:
    lock_path = Path(argv[0]) if argv else LOCK
    found = differences(read_lock(lock_path.read_text()), installed_here())
    for line in found:
        print(f"venvcheck: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
