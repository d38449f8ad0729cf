"""A user's data on Redis: everything the server holds about one user, to export or
to erase (``GET`` and ``DELETE /api/me/data``).

It walks every room (``lc:rooms``) and, in each, the places a user's data lives:
the chat archive, history and recent list (``chats``, ``log``, ``recent``), their
orders (``uord:<user>``, ``units:<sale>``), coupon claims (``uclaims:<user>``, ``cclaims:<id>``,
``cspent:<id>``), giveaway entries (``gaws`` -> ``gent:<id>``, ``ghere:<id>``, the
winners), group memberships (``grps`` -> ``gmem:<id>``, ``gord:<id>``,
``dmember:<deal>``), bids (``aucs`` -> ``abids:<id>``, the lot's leader), reports
(``ureports:<user>`` -> ``reporters:<target>``), their mute and slow-mode marks and the
buyers' sets. Erasing removes their chat lines, and the history's other events that
name them (a client that needs them resyncs), and puts ``alias`` (a pseudonym no one
can turn back into the id) in the user's place everywhere else, the moderation log and
the review queue included, so the room's figures and the bid logs' replay stay as they
were. A drawn giveaway's proof then shows the alias: its entrants' digest no longer
checks (erasure outranks the proof). Orders already sent to the shop are the shop's to
erase; an entry of the outbox not delivered yet is sent again under the alias (the
shop applies each order id once); a dead letter keeps the id until it is redriven.
Not atomic across keys: a user erasing their data while still active may leave what
they did meanwhile.
"""

from __future__ import annotations

from typing import Any

from livecommerce.backends import ERASED_NAME, pseudonymous
from livecommerce.backends.redis import BUYERS_INDEX, ROOMS_INDEX, Client, _s, key
from livecommerce.protocol import dumps, loads

_Stream = list[tuple[bytes, dict[bytes, bytes]]]


class RedisPrivacyStore:
    def __init__(self, r: Client) -> None:
        self._r = r

    async def _rooms(self) -> list[str]:
        return [_s(r) for r in await self._r.zrange(ROOMS_INDEX, 0, -1)]

    async def _chats(self, room: str, user: str) -> list[bytes]:
        needle = b'"user":{"id":' + dumps(user)
        lines: list[bytes] = await self._r.zrange(key(room, "chats"), 0, -1)  # type: ignore[assignment]
        return [ln for ln in lines if needle in ln and loads(ln)["user"]["id"] == user]

    async def _ids(self, room: str, index: str) -> list[str]:
        return [_s(i) for i in await self._r.zrange(key(room, index), 0, -1)]

    async def export(self, user: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for room in await self._rooms():
            r = self._r

            def k(name: str, room: str = room) -> str:
                return key(room, name)

            chats = [loads(ln) for ln in await self._chats(room, user)]
            orders = []
            for oid in await r.zrange(k(f"uord:{user}"), 0, -1):
                fields = await r.hgetall(k(f"ordr:{_s(oid)}"))
                orders.append({_s(a): _s(b) for a, b in fields.items()})
            claims = {}
            for cid in await r.smembers(k(f"uclaims:{user}")):
                claims[_s(cid)] = int(await r.hget(k(f"cclaims:{_s(cid)}"), user) or 0)
            entries = [
                g for g in await self._ids(room, "gaws")
                if await r.sismember(k(f"gent:{g}"), user)
            ]  # fmt: skip
            groups = [
                g for g in await self._ids(room, "grps")
                if await r.lpos(k(f"gmem:{g}"), user) is not None
            ]  # fmt: skip
            bids = []
            for aid in await self._ids(room, "aucs"):
                for entry in await r.lrange(k(f"abids:{aid}"), 0, -1):
                    bid = loads(entry)
                    if bid["user"] == user:
                        bids.append({"auction": aid, **bid})
            reports = sorted(_s(t) for t in await r.smembers(k(f"ureports:{user}")))
            data = {
                "chats": chats, "orders": orders, "coupon_claims": claims,
                "giveaway_entries": entries, "groups": groups, "bids": bids, "reports": reports,
            }  # fmt: skip
            if any(data.values()):
                out[room] = data
        return out

    async def erase(self, user: str, alias: str, name: str) -> dict[str, int]:
        done = dict.fromkeys(("chats", "orders", "coupon_claims", "entries", "groups",
                              "bids", "reports"), 0)  # fmt: skip
        for room in await self._rooms():
            for kind, n in (await self._erase_room(room, user, alias, name)).items():
                done[kind] += n
        if await self._r.srem(BUYERS_INDEX, user):
            await self._r.sadd(BUYERS_INDEX, alias)
        return done

    async def _erase_room(self, room: str, user: str, alias: str, name: str) -> dict[str, int]:
        r = self._r

        def k(name: str) -> str:
            return key(room, name)

        done: dict[str, int] = {}
        quoted = dumps(user)  # how the id appears in any JSON kept

        def renamed(text: bytes) -> bytes:
            return pseudonymous(text, user, alias, name)

        # the history's other events that name the user (a draw's winners, a group's
        # members, a lot's leader) leave it: a client that needs them resyncs
        history: _Stream = await r.xrange(k("log"))  # type: ignore[assignment]
        for entry_id, fields in history:
            if quoted in fields[b"l"]:
                await r.xdel(k("log"), entry_id)
        # the moderation log and the review queue keep their entries, under the alias
        kept: _Stream = await r.xrange(k("modlog"))  # type: ignore[assignment]
        if any(quoted in f[b"e"] for _, f in kept):
            await r.delete(k("modlog"))
            for _, f in kept:
                await r.xadd(k("modlog"), {"e": renamed(f[b"e"])})
        queue: dict[bytes, bytes] = await r.hgetall(k("flagged:msgs"))  # type: ignore[assignment]
        for msg_id, entry in queue.items():
            if quoted in entry:
                await r.hset(k("flagged:msgs"), msg_id, renamed(entry))
        chats = await self._chats(room, user)
        for line in chats:  # out of the archive, the history and the recent list
            await r.zrem(k("chats"), line)
            await r.xdel(k("log"), f"{loads(line)['seq']}-1")
            await r.lrem(k("recent"), 0, line.decode())
        done["chats"] = len(chats)
        oids = [_s(o) for o in await r.zrange(k(f"uord:{user}"), 0, -1)]
        for oid in oids:
            await r.hset(k(f"ordr:{oid}"), "user", alias)
            sale = _s(await r.hget(k(f"ordr:{oid}"), "sale") or b"")
            units = await r.hget(k(f"units:{sale}"), user)
            if units is not None:  # the user's units of the sale (its limit per person)
                await r.hdel(k(f"units:{sale}"), user)
                await r.hset(k(f"units:{sale}"), alias, units)
            await r.zadd(
                k(f"uord:{alias}"), {oid: float(await r.zscore(k(f"uord:{user}"), oid) or 0)}
            )
        await r.delete(k(f"uord:{user}"))
        done["orders"] = len(oids)
        outbox: _Stream = await r.xrange(k("outbox"))  # type: ignore[assignment]
        for entry_id, fields in outbox:  # not delivered yet: sent again, under the alias
            if fields.get(b"user") == user.encode():
                await r.xdel(k("outbox"), entry_id)
                again: dict[Any, Any] = {**fields, b"user": alias.encode()}
                await r.xadd(k("outbox"), again)
        cids = [_s(c) for c in await r.smembers(k(f"uclaims:{user}"))]
        for cid in cids:
            for name in (f"cclaims:{cid}", f"cspent:{cid}"):
                n = await r.hget(k(name), user)
                if n is not None:
                    await r.hdel(k(name), user)
                    await r.hset(k(name), alias, n)
            await r.sadd(k(f"uclaims:{alias}"), cid)
        await r.delete(k(f"uclaims:{user}"))
        done["coupon_claims"] = len(cids)
        done["entries"] = 0
        for gid in await self._ids(room, "gaws"):
            if await r.srem(k(f"gent:{gid}"), user):
                await r.sadd(k(f"gent:{gid}"), alias)
                done["entries"] += 1
            for mark in await r.smembers(k(f"ghere:{gid}")):
                who = _s(mark).partition("\n")[2]
                if who == user:
                    await r.srem(k(f"ghere:{gid}"), mark)
            winners = _s(await r.hget(k(f"gaw:{gid}"), "winners") or b"").split("\n")
            if user in winners:
                fixed = "\n".join(alias if n == user else n for n in winners)
                await r.hset(k(f"gaw:{gid}"), "winners", fixed)
            proof = await r.get(k(f"gproof:{gid}"))
            if proof is not None and dumps(user) in proof:  # erasure outranks the proof
                doc = loads(proof)
                for part in ("entrants", "winners"):
                    doc[part] = [alias if e == user else e for e in doc[part]]
                await r.set(k(f"gproof:{gid}"), dumps(doc))
            frozen = _s(await r.get(k(f"gfrozen:{gid}")) or b"").split("\n")
            if user in frozen:
                await r.set(
                    k(f"gfrozen:{gid}"), "\n".join(alias if n == user else n for n in frozen)
                )
        done["groups"] = 0
        for gid in await self._ids(room, "grps"):
            at = await r.lpos(k(f"gmem:{gid}"), user)
            if at is None:
                continue
            await r.lset(k(f"gmem:{gid}"), int(at), alias)  # type: ignore[arg-type]
            order = await r.hget(k(f"gord:{gid}"), user)
            if order is not None:
                await r.hdel(k(f"gord:{gid}"), user)
                await r.hset(k(f"gord:{gid}"), alias, order)
            deal = _s(await r.hget(k(f"grp:{gid}"), "deal") or b"")
            if await r.hdel(k(f"dmember:{deal}"), user):
                await r.hset(k(f"dmember:{deal}"), alias, gid)
            done["groups"] += 1
        done["bids"] = 0
        for aid in await self._ids(room, "aucs"):
            entries = await r.lrange(k(f"abids:{aid}"), 0, -1)
            for i, raw in enumerate(entries):
                bid = loads(raw)
                if user not in (bid["user"], bid["leader"]):
                    continue
                if bid["user"] == user:
                    bid["user"], bid["name"] = alias, ERASED_NAME
                    done["bids"] += 1
                if bid["leader"] == user:
                    bid["leader"] = alias
                await r.lset(k(f"abids:{aid}"), i, dumps(bid).decode())
            if _s(await r.hget(k(f"auc:{aid}"), "leader") or b"") == user:
                await r.hset(k(f"auc:{aid}"), mapping={"leader": alias, "leader_name": ERASED_NAME})
        targets = [_s(t) for t in await r.smembers(k(f"ureports:{user}"))]
        for target in targets:
            if await r.srem(k(f"reporters:{target}"), user):
                await r.sadd(k(f"reporters:{target}"), alias)
            await r.sadd(k(f"ureports:{alias}"), target)
        await r.delete(k(f"ureports:{user}"), k(f"slow:{user}"))
        await r.hdel(k("mutes"), user)
        await r.hdel(k("staff"), user)
        if await r.srem(k("buyers"), user):
            await r.sadd(k("buyers"), alias)
        done["reports"] = len(targets)
        return done
