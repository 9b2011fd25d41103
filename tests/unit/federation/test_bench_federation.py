"""The pure helpers of ``scripts/bench_federation.py``: the PDUs it sends must be ones a
receiving server accepts (format, hashes, signatures, chaining), or the benchmark
measures refusals."""

from __future__ import annotations

from twisted.trial import unittest

from homeserver.core.auth import check_received_event_limits, check_size_limits
from homeserver.core.events import Event
from homeserver.core.room_versions import get_room_version
from homeserver.core.signing import (
    check_content_hash,
    compute_event_id,
    generate_signing_key,
    get_verify_key,
    verify_event_signature,
)
from homeserver.federation.request_auth import parse_authorization_header, verify_request
from scripts.bench_federation import (
    build_message_chain,
    chunk,
    message_auth_event_ids,
    missing_events,
    signed_join,
    split_evenly,
    transaction_results_ok,
)

ORIGIN = "127.0.0.1:4443"
SENDER = "@bench:" + ORIGIN
ROOM = "!room:target"


def _eid(name: str) -> str:
    """A well-formed v4+ event ID named by ``name`` (letters)."""
    return "$" + (name * 43)[:43]


CREATE, PL, JOIN = _eid("create"), _eid("power"), _eid("join")


def _state(version_id: str) -> dict:
    state = {("m.room.power_levels", ""): PL, ("m.room.member", SENDER): JOIN}
    if version_id != "12":
        state[("m.room.create", "")] = CREATE
    return state


class MessageChainTests(unittest.TestCase):
    def setUp(self) -> None:
        self.key = generate_signing_key()
        self.version = get_room_version("10")

    def chain(self, count: int = 5) -> list:
        auth = message_auth_event_ids(self.version, _state("10"), SENDER)
        return build_message_chain(self.version, ROOM, SENDER, ORIGIN, self.key, auth, JOIN, 7, count, 1_700_000_000_000, "t")

    def test_each_pdu_is_valid_hashed_and_signed(self) -> None:
        for pdu in self.chain():
            event = Event.from_pdu(pdu, self.version)
            check_size_limits(event)
            check_received_event_limits(event)
            self.assertTrue(check_content_hash(pdu))
            verify_event_signature(self.version, pdu, ORIGIN, get_verify_key(self.key))
            self.assertEqual(event.sender, SENDER)
            self.assertEqual(list(event.auth_event_ids), [CREATE, PL, JOIN])

    def test_pdus_chain_on_their_predecessor_with_growing_depth(self) -> None:
        pdus = self.chain(4)
        self.assertEqual(pdus[0]["prev_events"], [JOIN])
        self.assertEqual(pdus[0]["depth"], 8)
        for before, after in zip(pdus, pdus[1:]):
            self.assertEqual(after["prev_events"], [compute_event_id(self.version, before)])
            self.assertEqual(after["depth"], before["depth"] + 1)
        self.assertEqual([p["content"]["bench_id"] for p in pdus], ["t-0", "t-1", "t-2", "t-3"])
        self.assertEqual(len({compute_event_id(self.version, p) for p in pdus}), 4)

    def test_a_tampered_pdu_fails_its_checks(self) -> None:
        pdu = self.chain(1)[0]
        pdu["content"] = {**pdu["content"], "body": "changed"}
        self.assertFalse(check_content_hash(pdu))

    def test_room_versions_1_and_2_are_refused(self) -> None:
        with self.assertRaises(ValueError):
            build_message_chain(get_room_version("1"), ROOM, SENDER, ORIGIN, self.key, [], "$x:y", 1, 1, 0, "t")


class AuthEventsTests(unittest.TestCase):
    def test_create_event_is_an_auth_event_before_v12(self) -> None:
        self.assertEqual(message_auth_event_ids(get_room_version("10"), _state("10"), SENDER), [CREATE, PL, JOIN])

    def test_v12_leaves_the_create_event_out(self) -> None:
        self.assertEqual(message_auth_event_ids(get_room_version("12"), _state("12"), SENDER), [PL, JOIN])

    def test_missing_membership_is_an_error(self) -> None:
        state = _state("10")
        del state[("m.room.member", SENDER)]
        with self.assertRaises(ValueError):
            message_auth_event_ids(get_room_version("10"), state, SENDER)


class JoinTests(unittest.TestCase):
    def test_join_template_is_completed_and_signed(self) -> None:
        version = get_room_version("10")
        key = generate_signing_key()
        template = {"room_id": ROOM, "type": "m.room.member", "state_key": SENDER, "sender": SENDER,
                    "content": {"membership": "leave"}, "depth": 3, "prev_events": ["$a"], "auth_events": ["$b"],
                    "origin": "target", "origin_server_ts": 1, "signatures": {"target": {"ed25519:x": "bogus"}}}
        join = signed_join(version, template, ORIGIN, key, 42)
        self.assertEqual(join["content"], {"membership": "join"})
        self.assertEqual((join["origin"], join["origin_server_ts"]), (ORIGIN, 42))
        self.assertEqual(list(join["signatures"]), [ORIGIN])
        self.assertTrue(check_content_hash(join))
        verify_event_signature(version, join, ORIGIN, get_verify_key(key))


class MissingEventsTests(unittest.TestCase):
    def test_ancestors_between_earliest_and_latest_oldest_first(self) -> None:
        events = {f"${i}": {"prev_events": [f"${i - 1}"] if i else [], "depth": i} for i in range(6)}
        got = missing_events(events, ["$1"], ["$5"], 10)
        self.assertEqual([e["depth"] for e in got], [2, 3, 4])
        self.assertEqual([e["depth"] for e in missing_events(events, [], ["$5"], 2)], [3, 4])
        self.assertEqual(missing_events(events, [], ["$unknown"], 10), [])


class TransactionTests(unittest.TestCase):
    def test_chunk_and_split(self) -> None:
        self.assertEqual(chunk(list(range(5)), 2), [[0, 1], [2, 3], [4]])
        self.assertEqual(chunk([], 50), [])
        with self.assertRaises(ValueError):
            chunk([1], 0)
        self.assertEqual(split_evenly(10, 3), [4, 3, 3])
        self.assertEqual(sum(split_evenly(1001, 4)), 1001)

    def test_results_report_errors_only(self) -> None:
        self.assertEqual(transaction_results_ok({"pdus": {"$a": {}, "$b": {}}}, ["$a", "$b"]), [])
        self.assertEqual(transaction_results_ok({"pdus": {}}, ["$a"]), [])
        problems = transaction_results_ok({"pdus": {"$a": {"error": "rejected"}}}, ["$a", "$b"])
        self.assertEqual(len(problems), 1)
        self.assertIn("$a", problems[0])
        self.assertEqual(len(transaction_results_ok({"errcode": "M_FORBIDDEN"}, ["$a"])), 1)

    def test_auth_header_verifies_for_the_target(self) -> None:
        from scripts.bench_federation import FakeRemote

        fake = FakeRemote("unused-cert", "unused-key")
        body = {"origin": fake.server_name, "pdus": [], "edus": []}
        header = fake.auth_header("target", "PUT", "/_matrix/federation/v1/send/t1", body)
        auth = parse_authorization_header(header)
        self.assertEqual((auth.origin, auth.destination), (fake.server_name, "target"))
        verify_request(auth, "PUT", "/_matrix/federation/v1/send/t1", "target", body, get_verify_key(fake.signing_key))
        with self.assertRaises(Exception):
            verify_request(auth, "PUT", "/_matrix/federation/v1/send/t2", "target", body, get_verify_key(fake.signing_key))


class ProfileSummaryTests(unittest.TestCase):
    def test_self_and_inclusive_counts(self) -> None:
        from scripts.bench_federation import summarize_collapsed

        lines = ["main;a;b 3\n", "main;a 2\n", "main;c;b 5\n", "garbage\n", "\n"]
        self_top, inclusive, total = summarize_collapsed(lines)
        self.assertEqual(total, 10)
        self.assertEqual(self_top, [("b", 8), ("a", 2)])
        self.assertEqual(dict(inclusive), {"main": 10, "b": 8, "a": 5, "c": 5})
        # A frame twice on one stack (recursion) counts once inclusively.
        _, inclusive, _ = summarize_collapsed(["f;f;f 4\n"])
        self.assertEqual(inclusive, [("f", 4)])


class BackfillTests(unittest.TestCase):
    def test_start_events_and_ancestors_newest_first(self) -> None:
        from scripts.bench_federation import backfill_events

        events = {f"${i}": {"prev_events": [f"${i - 1}"] if i else [], "depth": i} for i in range(6)}
        self.assertEqual([e["depth"] for e in backfill_events(events, ["$4"], 3)], [4, 3, 2])
        self.assertEqual([e["depth"] for e in backfill_events(events, ["$1", "$unknown"], 10)], [1, 0])

    def test_interleave_round_robin(self) -> None:
        from scripts.bench_federation import interleave

        self.assertEqual(interleave([[1, 2, 3], ["a"], [10, 20]]), [1, "a", 10, 2, 20, 3])
        self.assertEqual(interleave([]), [])
