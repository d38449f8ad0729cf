"""Provably fair draws (issue 14's giveaways): the rules, the proof, the verifier."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.promotions.draws import (
    Proof,
    commitment,
    draw,
    entrants_digest,
    make_proof,
    new_seed,
    verify,
)
from tests.conftest import ROOT

SEED = bytes(range(32))
ENTRANTS = [f"user-{i}" for i in range(40)]


def proof() -> Proof:
    return make_proof(giveaway="g-1", room="demo", seed=SEED, entrants=ENTRANTS, count=3)


def test_the_rules_in_the_standard_library_alone() -> None:
    """What the docs tell a checker to compute, written out again here."""
    p = proof()
    assert p.commitment == hashlib.sha256(SEED).hexdigest()
    text = "\n".join(sorted(ENTRANTS)).encode()
    assert p.entrants_digest == hashlib.sha256(text).hexdigest()
    tickets = {e: hmac.new(SEED, e.encode(), "sha256").hexdigest() for e in ENTRANTS}
    assert p.winners == sorted(ENTRANTS, key=lambda e: (tickets[e], e))[:3]
    assert verify(p) == []


@pytest.mark.parametrize(
    ("tamper", "part"),
    [
        (lambda p: replace(p, seed=new_seed().hex()), "seed"),
        (lambda p: replace(p, seed="zz"), "seed"),
        (lambda p: replace(p, commitment=commitment(b"another")), "seed"),
        (lambda p: replace(p, entrants=[*p.entrants, "user-99"]), "entrants"),
        (lambda p: replace(p, entrants=p.entrants[1:]), "entrants"),
        (lambda p: replace(p, entrants_digest=entrants_digest(["x"])), "entrants"),
        (lambda p: replace(p, winners=list(reversed(p.winners))), "winners"),
        (lambda p: replace(p, winners=["user-0", *p.winners[1:]]), "winners"),
        (lambda p: replace(p, count=4), "winners"),
    ],
)
def test_tampering_with_any_part_is_found_and_named(tamper: object, part: str) -> None:
    problems = verify(tamper(proof()))  # type: ignore[operator]
    assert problems and any(line.startswith(f"{part}:") for line in problems), problems


def test_a_commitment_other_than_the_announced_one_is_found() -> None:
    assert verify(proof(), published_commitment=commitment(SEED)) == []
    problems = verify(proof(), published_commitment=commitment(b"announced"))
    assert problems == ["commitment: not the one published when the giveaway started"]


@settings(max_examples=200, deadline=None)
@given(
    entrants=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30, unique=True),
    count=st.integers(1, 5),
    seed=st.binary(min_size=32, max_size=32),
)
def test_any_draw_verifies_and_picks_distinct_entrants(
    entrants: list[str], count: int, seed: bytes
) -> None:
    p = make_proof(giveaway="g", room="r", seed=seed, entrants=entrants, count=count)
    assert verify(Proof.from_json(json.loads(json.dumps(p.to_json())))) == []
    assert len(p.winners) == min(count, len(entrants)) == len(set(p.winners))
    assert set(p.winners) <= set(entrants)


def test_the_draw_does_not_favour_anyone() -> None:
    """Over 3,000 seeds, each of 10 entrants wins about a tenth of the time."""
    wins = Counter(
        draw(i.to_bytes(32, "big"), [f"u{j}" for j in range(10)], 1)[0] for i in range(3000)
    )
    assert set(wins) == {f"u{j}" for j in range(10)}
    assert all(220 <= n <= 380 for n in wins.values()), wins  # 300 expected, 5 sigma ~ 82


def run_verifier(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livecommerce", "verify-draw", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_documented_verifier_says_valid_or_which_part_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "proof.json"
    good.write_text(json.dumps(proof().to_json()))
    done = run_verifier(good)
    assert done.returncode == 0 and done.stdout.strip() == "valid: 3 winners of 40 entrants"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**proof().to_json(), "winners": ["user-1", "user-2", "user-3"]}))
    done = run_verifier(bad)
    assert done.returncode == 1 and done.stdout.startswith("invalid: winners:")
    broken = tmp_path / "broken.json"
    broken.write_text('{"seed": 1}')
    done = run_verifier(broken)
    assert done.returncode == 1 and "not a draw proof" in done.stdout
