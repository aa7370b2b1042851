"""Re-sealing after a rotation (shared/reseal.py) on the live database: values move to
the current key and still open; a change made meanwhile wins; a value that does not
open is counted and left as it is; values kept on purpose are counted, not rewritten."""

from __future__ import annotations

from shared.reseal import Kept, Resealer, report
from shared.security import FieldCipher

OLD = b"o" * 32
NEW = b"n" * 32
STRANGER = b"s" * 32


def ciphers() -> tuple[FieldCipher, FieldCipher]:
    """(before the rotation, after it: the old key retired)"""
    return FieldCipher({"old": OLD}, "old"), FieldCipher({"old": OLD, "new": NEW}, "new")


def sealed_fields(doc: dict) -> list[tuple[str, str]]:
    return [(f"sealed.{k}", f"t:{doc['_id']}:{k}") for k in doc.get("sealed") or {}]


class ChangedBeforeEachUpdate:
    """The collection, with another writer's change landing just before each update."""

    def __init__(self, collection) -> None:
        self.collection = collection
        self.name = collection.name

    def find(self, *args, **kwargs):
        return self.collection.find(*args, **kwargs)

    async def update_one(self, query, update):
        await self.collection.update_one({"_id": query["_id"]}, {"$inc": {"version": 1}})
        return await self.collection.update_one(query, update)


async def test_values_move_to_the_current_key_and_still_open(mongo_client, run_id) -> None:
    before, after = ciphers()
    coll = mongo_client[f"t{run_id}_reseal"]["people"]
    await coll.insert_many(
        [
            {
                "_id": f"p{i}",
                "version": 3,
                "sealed": {
                    f: before.encrypt(f"{f} of {i}", context=f"t:p{i}:{f}")
                    for f in ("name", "email")
                },
                "outbox": [
                    {"id": f"e{i}", "sealed_data": before.encrypt("{}", context=f"outbox:e{i}")}
                ],
            }
            for i in range(3)
        ]
    )
    tally = await Resealer(after).collection(coll, sealed_fields)
    assert (tally.documents, tally.resealed, tally.left) == (3, 9, 0)
    only_new = FieldCipher({"new": NEW}, "new")
    for doc in await coll.find().sort("_id").to_list():
        assert doc["version"] == 4  # an aggregate's writers see the change and reload
        i = doc["_id"][1:]
        for f, token in doc["sealed"].items():
            assert only_new.decrypt(token, context=f"t:p{i}:{f}") == f"{f} of {i}"
        only_new.decrypt(doc["outbox"][0]["sealed_data"], context=f"outbox:e{i}")
    again = await Resealer(after).collection(coll, sealed_fields)
    assert (again.resealed, again.current, again.left) == (0, 9, 0)


async def test_a_change_made_meanwhile_wins_and_is_counted(mongo_client, run_id) -> None:
    before, after = ciphers()
    coll = mongo_client[f"t{run_id}_reseal"]["people"]
    token = before.encrypt("Ana", context="t:p1:name")
    await coll.insert_one({"_id": "p1", "version": 1, "sealed": {"name": token}})
    tally = await Resealer(after).collection(ChangedBeforeEachUpdate(coll), sealed_fields)
    assert (tally.resealed, tally.changed_meanwhile, tally.left) == (0, 1, 1)
    doc = await coll.find_one({"_id": "p1"})
    assert doc["sealed"]["name"] == token and doc["version"] == 2  # the other write stands
    text = report({"people": tally}, {"people": sealed_fields}, "new")
    assert "1 changed meanwhile" in text and "run it again" in text
    assert (await Resealer(after).collection(coll, sealed_fields)).resealed == 1


async def test_a_value_that_does_not_open_is_counted_and_left(mongo_client, run_id) -> None:
    _, after = ciphers()
    stranger = FieldCipher({"gone": STRANGER}, "gone")
    coll = mongo_client[f"t{run_id}_reseal"]["people"]
    lost = stranger.encrypt("x", context="t:p1:name")
    moved = ciphers()[0].encrypt("y", context="t:p9:email")  # sealed for another document
    good = ciphers()[0].encrypt("z", context="t:p1:chat")
    await coll.insert_one({"_id": "p1", "sealed": {"name": lost, "email": moved, "chat": good}})
    tally = await Resealer(after).collection(coll, sealed_fields)
    assert (tally.resealed, tally.unreadable) == (1, 2)
    doc = await coll.find_one({"_id": "p1"})
    assert doc["sealed"]["name"] == lost and doc["sealed"]["email"] == moved
    assert after.key_id_of(doc["sealed"]["chat"]) == "new" and "version" not in doc


async def test_kept_values_are_counted_and_never_rewritten(mongo_client, run_id) -> None:
    before, after = ciphers()
    db = mongo_client[f"t{run_id}_reseal"]
    token = before.encrypt("signed", context="t:s1:typed_name")
    await db["signatures"].insert_one({"_id": "s1", "sealed": {"typed_name": token}})
    plan = {"signatures": Kept(sealed_fields, "the chain covers them")}
    tallies = await Resealer(after).database(db, plan)
    assert (tallies["signatures"].kept, tallies["signatures"].resealed) == (1, 0)
    assert (await db["signatures"].find_one({"_id": "s1"}))["sealed"]["typed_name"] == token
    text = report(tallies, plan, "new")
    assert "1 kept under their key: the chain covers them" in text
    assert "keep the retired keys" in text
