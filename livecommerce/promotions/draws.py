"""Provably fair draws (a giveaway's winners): the rules and the proof. Pure.

1. When a giveaway starts, the server draws a secret ``seed`` (32 random bytes) and
   publishes only its **commitment**, ``SHA-256(seed)``: from then on it cannot choose
   another seed without everyone seeing the commitment fail.
2. At the draw it freezes the **entrants** (user ids, sorted, one per line, UTF-8) and
   publishes their digest, ``SHA-256`` of that text, then reveals the seed.
3. The **winners** are the entrants ranked by ``HMAC-SHA256(key=seed, msg=entrant id)``
   (as hex, ascending; ties broken by the id), the first ``count`` of them.

Anyone can check a draw from its proof (:class:`Proof`, served at
``GET /api/giveaways/{id}/proof``): the seed matches the commitment published at the
start, the entrants match their digest, and the winners follow from both.
``livecommerce verify-draw FILE`` does exactly that (:func:`verify`), with the standard
library alone, so it can be read and rewritten in any language.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass
from typing import Any

PROOF_VERSION = 1


def new_seed() -> bytes:
    """A fresh secret seed."""
    return secrets.token_bytes(32)


def commitment(seed: bytes) -> str:
    """What is published at the start: ``SHA-256(seed)`` as hex."""
    return hashlib.sha256(seed).hexdigest()


def entrants_text(entrants: list[str]) -> bytes:
    """The frozen entrant list as hashed: the ids, sorted, one per line, UTF-8."""
    return "\n".join(sorted(set(entrants))).encode()


def entrants_digest(entrants: list[str]) -> str:
    """``SHA-256`` of :func:`entrants_text`, as hex."""
    return hashlib.sha256(entrants_text(entrants)).hexdigest()


def ticket(seed: bytes, entrant: str) -> str:
    """An entrant's place in the draw: ``HMAC-SHA256(seed, id)`` as hex."""
    return hmac.new(seed, entrant.encode(), "sha256").hexdigest()


def draw(seed: bytes, entrants: list[str], count: int) -> list[str]:
    """The winners: the first ``count`` entrants by :func:`ticket` (then by id)."""
    ranked = sorted(set(entrants), key=lambda e: (ticket(seed, e), e))
    return ranked[:count]


@dataclass(frozen=True, slots=True)
class Proof:
    """Everything needed to check a draw."""

    giveaway: str
    room: str
    commitment: str
    seed: str
    """The revealed seed, hex."""
    entrants: list[str]
    entrants_digest: str
    count: int
    winners: list[str]
    version: int = PROOF_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Any) -> Proof:
        """A proof from its JSON.

        Raises:
            ValueError: not a proof (a field missing or of the wrong type).
        """
        if not isinstance(doc, dict):
            raise ValueError("a proof is a JSON object")
        try:
            proof = cls(
                giveaway=str(doc["giveaway"]),
                room=str(doc["room"]),
                commitment=str(doc["commitment"]),
                seed=str(doc["seed"]),
                entrants=[str(e) for e in doc["entrants"]],
                entrants_digest=str(doc["entrants_digest"]),
                count=int(doc["count"]),
                winners=[str(w) for w in doc["winners"]],
                version=int(doc.get("version", PROOF_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a draw proof: {exc!r}") from exc
        return proof


def make_proof(*, giveaway: str, room: str, seed: bytes, entrants: list[str], count: int) -> Proof:
    """The proof of a draw with ``seed`` among ``entrants`` for ``count`` winners."""
    frozen = sorted(set(entrants))
    return Proof(
        giveaway=giveaway,
        room=room,
        commitment=commitment(seed),
        seed=seed.hex(),
        entrants=frozen,
        entrants_digest=entrants_digest(frozen),
        count=count,
        winners=draw(seed, frozen, count),
    )


def verify(proof: Proof, *, published_commitment: str | None = None) -> list[str]:
    """What is wrong with ``proof``, one line each (empty: the draw checks out).

    ``published_commitment``: the commitment as announced at the start (the
    ``giveaway.started`` event), if the checker kept it; else the proof's own.
    """
    problems: list[str] = []
    if proof.version != PROOF_VERSION:
        problems.append(f"version: {proof.version} is not {PROOF_VERSION}")
    try:
        seed = bytes.fromhex(proof.seed)
    except ValueError:
        return [*problems, "seed: not hex"]
    if published_commitment is not None and published_commitment != proof.commitment:
        problems.append("commitment: not the one published when the giveaway started")
    if commitment(seed) != proof.commitment:
        problems.append("seed: its SHA-256 is not the commitment")
    if entrants_digest(proof.entrants) != proof.entrants_digest:
        problems.append("entrants: their digest is not the one published at the draw")
    if sorted(set(proof.entrants)) != proof.entrants:
        problems.append("entrants: not sorted and distinct")
    if proof.count < 1:
        problems.append("count: must be positive")
    expected = draw(seed, proof.entrants, proof.count)
    if proof.winners != expected:
        problems.append(f"winners: the seed and the entrants give {expected}")
    return problems
