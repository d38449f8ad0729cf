"""The pure core imports no I/O: no asyncio, aiohttp or redis (ARCHITECTURE.md, seams)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

PURE = [
    "livecommerce.errors",
    "livecommerce.config",
    "livecommerce.protocol",
    "livecommerce.auth",
    "livecommerce.rooms.state",
    "livecommerce.moderation.rules",
    "livecommerce.moderation.wordfilter",
    "livecommerce.inventory.rules",
    "livecommerce.orders.webhooks",
]


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_io(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in ('asyncio', 'aiohttp', 'redis', 'websockets')"
        " if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"


def test_only_the_protocol_imports_orjson() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "livecommerce").rglob("*.py")
        if "import orjson" in p.read_text() and "protocol" not in p.parts
    ]
    assert offenders == []
