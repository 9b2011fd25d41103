"""Backend contract: the same checks run against MemoryBackend and RedisBackend.

``MemoryBackend`` is only a faithful stand-in if it answers every command
the way Redis does; this mixin pins those answers. Subclasses provide
``make_backend()`` (and ``trim(key, n)``, an exact XTRIM).
"""

from bus.backend import IdNotIncreasing, NoGroup

K = "estuary:{contract:0}"
K2 = "estuary:{contract:1}"
F = {b"v": b"1", b"data": b"{}"}


class BackendContract:
    def make_backend(self):
        raise NotImplementedError

    def trim(self, key, maxlen):
        raise NotImplementedError

    async def test_xadd_explicit_ids(self):
        """XADD takes increasing explicit IDs and refuses the others."""
        b = self.make_backend()
        await b.xadd(K, "5-0", F, None)
        await b.xadd(K, "7-0", F, None)
        for bad in ("7-0", "6-0"):
            with self.assertRaises(IdNotIncreasing):
                await b.xadd(K, bad, F, None)
        self.assertEqual(await b.last_id(K), b"7-0")
        self.assertIsNone(await b.last_id(K2))

    async def test_xadd_refuses_ids_of_trimmed_entries(self):
        """The last ID survives trimming: an old ID stays refused."""
        b = self.make_backend()
        await b.xadd(K, "1-0", F, None)
        await b.xadd(K, "2-0", F, None)
        self.trim(K, 0)
        self.assertIsNone(await b.last_id(K))
        with self.assertRaises(IdNotIncreasing):
            await b.xadd(K, "2-0", F, None)
        await b.xadd(K, "3-0", F, None)

    async def test_xread_after_cursors(self):
        """XREAD returns entries strictly after each cursor, only for keys that have some."""
        b = self.make_backend()
        for i in (1, 2, 3):
            await b.xadd(K, f"{i}-0", {**F, b"n": str(i).encode()}, None)
        self.assertEqual(await b.xread({K: "3-0", K2: "0-0"}, 10, None), [])
        got = await b.xread({K: "1-0", K2: "0-0"}, 10, None)
        self.assertEqual(got, [(K, [(b"2-0", {**F, b"n": b"2"}), (b"3-0", {**F, b"n": b"3"})])])
        got = await b.xread({K: "0-0"}, 1, None)
        self.assertEqual([e[0] for e in got[0][1]], [b"1-0"])

    async def test_epochs(self):
        """ensure_epochs keeps an existing token and sets a missing one; get_epochs reads."""
        b = self.make_backend()
        e1, e2 = "estuary:{contract:0}:epoch", "estuary:{contract:1}:epoch"
        self.assertEqual(await b.get_epochs([e1]), [None])
        self.assertEqual(await b.ensure_epochs([e1], b"first"), [b"first"])
        self.assertEqual(await b.ensure_epochs([e1, e2], b"second"), [b"first", b"second"])
        self.assertEqual(await b.get_epochs([e1, e2]), [b"first", b"second"])

    async def test_groups(self):
        """Group creation, new and pending reads, acks, NOGROUP."""
        b = self.make_backend()
        with self.assertRaises(NoGroup):
            await b.xreadgroup(K, "g", "c", ">", 10, None)
        self.assertTrue(await b.group_create(K, "g"))
        self.assertFalse(await b.group_create(K, "g"))
        await b.xadd(K, "1-0", F, None)
        await b.xadd(K, "2-0", F, None)
        got = await b.xreadgroup(K, "g", "c", ">", 10, None)
        self.assertEqual([e[0] for e in got], [b"1-0", b"2-0"])
        self.assertEqual(await b.xreadgroup(K, "g", "c", ">", 10, None), [])
        self.assertEqual(await b.xack(K, "g", [b"1-0"]), 1)
        self.assertEqual(await b.xack(K, "g", [b"1-0"]), 0)
        pending = await b.xreadgroup(K, "g", "c", "0", 10, None)
        self.assertEqual(pending, [(b"2-0", F)])
        self.assertEqual(await b.xreadgroup(K, "g", "c", "2-0", 10, None), [])
        self.assertEqual(await b.xreadgroup(K, "g", "other", "0", 10, None), [])
        self.assertEqual(await b.xack(K2, "g", [b"1-0"]), 0)

    async def test_group_created_at_zero_sees_backlog(self):
        """A group created on an existing stream is handed the entries already there."""
        b = self.make_backend()
        await b.xadd(K, "4-0", F, None)
        await b.group_create(K, "g")
        got = await b.xreadgroup(K, "g", "c", ">", 10, None)
        self.assertEqual([e[0] for e in got], [b"4-0"])

    async def test_autoclaim_and_deleted_entries(self):
        """XAUTOCLAIM moves idle entries and reports (and drops) trimmed ones."""
        b = self.make_backend()
        await b.group_create(K, "g")
        for i in (1, 2, 3):
            await b.xadd(K, f"{i}-0", F, None)
        await b.xreadgroup(K, "g", "dead", ">", 10, None)
        self.trim(K, 2)  # entry 1 is gone while still pending
        cursor, claimed, deleted = await b.xautoclaim(K, "g", "alive", 0, b"0-0", 10)
        self.assertEqual(cursor, b"0-0")
        self.assertEqual([e[0] for e in claimed], [b"2-0", b"3-0"])
        self.assertEqual(deleted, [b"1-0"])
        self.assertEqual(await b.xreadgroup(K, "g", "dead", "0", 10, None), [])
        mine = await b.xreadgroup(K, "g", "alive", "0", 10, None)
        self.assertEqual([e[0] for e in mine], [b"2-0", b"3-0"])
        with self.assertRaises(NoGroup):
            await b.xautoclaim(K2, "g", "alive", 0, b"0-0", 10)

    async def test_pending_entry_trimmed_reads_empty_fields(self):
        """Reading one's pending list returns empty fields for a trimmed entry."""
        b = self.make_backend()
        await b.group_create(K, "g")
        await b.xadd(K, "1-0", F, None)
        await b.xadd(K, "2-0", F, None)
        await b.xreadgroup(K, "g", "c", ">", 10, None)
        self.trim(K, 1)
        self.assertEqual(await b.xreadgroup(K, "g", "c", "0", 10, None), [(b"1-0", {}), (b"2-0", F)])

    async def test_ping(self):
        """PING answers None."""
        self.assertIsNone(await self.make_backend().ping())

    async def test_marks_only_rise(self):
        """raise_marks keeps the highest value per field, adds new fields, and get_marks reads them all."""
        b = self.make_backend()
        key = "estuary:marks:{@alice:example.org}"
        self.assertEqual(await b.get_marks(key), {})
        await b.raise_marks(key, {"events.3": 10, "events.5": 4}, 60000)
        await b.raise_marks(key, {"events.3": 7, "receipts.1": 2}, 60000)
        await b.raise_marks(key, {"events.5": 9}, 60000)
        self.assertEqual(await b.get_marks(key), {"events.3": 10, "events.5": 9, "receipts.1": 2})
