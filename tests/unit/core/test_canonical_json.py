"""Tests for canonical JSON (appendices "Canonical JSON")."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from homeserver.core.canonical_json import (
    CANONICALJSON_MAX_INT,
    CANONICALJSON_MIN_INT,
    canonicalise_json,
    check_strict_canonical_values,
    decode_json,
    encode_canonical_json,
)

# (input JSON, canonical output) pairs from appendices "Canonical JSON" /
# "Examples".
SPEC_EXAMPLES = [
    ("{}", "{}"),
    ('{"one": 1, "two": "Two"}', '{"one":1,"two":"Two"}'),
    ('{"b": "2", "a": "1"}', '{"a":"1","b":"2"}'),
    ('{"b":"2","a":"1"}', '{"a":"1","b":"2"}'),
    (
        '{"auth": {"success": true, "mxid": "@john.doe:example.com", "profile": '
        '{"display_name": "John Doe", "three_pids": [{"medium": "email", "address": '
        '"john.doe@example.org"}, {"medium": "msisdn", "address": "123456789"}]}}}',
        '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
        '"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
        '{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ),
    ('{"a": "日本語"}', '{"a":"日本語"}'),
    ('{"本": 2, "日": 1}', '{"日":1,"本":2}'),
    ('{"a": "\\u65E5"}', '{"a":"日"}'),
    ('{"a": null}', '{"a":null}'),
    ('{"a": -0, "b": 1e10}', '{"a":0,"b":10000000000}'),
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=CANONICALJSON_MIN_INT, max_value=CANONICALJSON_MAX_INT)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


class SpecExampleTests(SynchronousTestCase):
    """The appendices' canonical JSON examples, byte for byte."""

    def test_examples(self) -> None:
        """Each example input canonicalises to the spec's output."""
        for given_json, expected in SPEC_EXAMPLES:
            self.assertEqual(canonicalise_json(given_json.encode("utf-8")), expected.encode("utf-8"))

    def test_encode_examples(self) -> None:
        """Encoding the decoded examples (bar the -0/1e10 one) matches too."""
        for given_json, expected in SPEC_EXAMPLES[:-1]:
            self.assertEqual(encode_canonical_json(json.loads(given_json)), expected.encode("utf-8"))

    def test_control_character_escapes(self) -> None:
        """Only control characters, quote and backslash are escaped, with the
        short forms where they exist and lowercase \\u00XX otherwise."""
        self.assertEqual(
            encode_canonical_json({"a": "\x00\x08\t\n\x0c\r\x1f\"\\\x7f/é"}),
            '{"a":"\\u0000\\b\\t\\n\\f\\r\\u001f\\"\\\\\x7f/é"}'.encode("utf-8"),
        )

    def test_non_integral_number_refused(self) -> None:
        """canonicalise_json refuses non-integers."""
        self.assertRaises(ValueError, canonicalise_json, b'{"a": 1.5}')


class EncodeTests(SynchronousTestCase):
    """encode_canonical_json refusals and options."""

    def test_floats_refused_by_default(self) -> None:
        """Floats are not canonical JSON."""
        self.assertRaises(ValueError, encode_canonical_json, {"a": 1.0})
        self.assertRaises(ValueError, encode_canonical_json, [[{"x": 0.5}]])

    def test_floats_allowed_for_old_rooms(self) -> None:
        """allow_floats encodes with Python's float repr, as Synapse does."""
        self.assertEqual(encode_canonical_json({"a": 10.9}, allow_floats=True), b'{"a":10.9}')

    def test_nan_always_refused(self) -> None:
        """NaN and infinities are never JSON."""
        for value in (float("nan"), float("inf"), float("-inf")):
            self.assertRaises(ValueError, encode_canonical_json, {"a": value}, allow_floats=True)

    def test_int_range(self) -> None:
        """strict_int_range refuses integers beyond +/-(2**53 - 1)."""
        encode_canonical_json({"a": CANONICALJSON_MAX_INT}, strict_int_range=True)
        encode_canonical_json({"a": CANONICALJSON_MIN_INT}, strict_int_range=True)
        self.assertRaises(ValueError, encode_canonical_json, {"a": 2**53}, strict_int_range=True)
        self.assertRaises(ValueError, encode_canonical_json, {"a": -(2**53)}, strict_int_range=True)
        self.assertEqual(encode_canonical_json({"a": 2**64}), b'{"a":18446744073709551616}')

    def test_non_string_keys_refused(self) -> None:
        """Object keys must be strings."""
        self.assertRaises(ValueError, encode_canonical_json, {1: "a"})

    def test_lone_surrogate_refused(self) -> None:
        """Lone surrogates cannot be encoded as UTF-8."""
        self.assertRaises(ValueError, encode_canonical_json, {"a": "\ud800"})
        self.assertRaises(ValueError, encode_canonical_json, {"\udfff": 1})

    def test_unknown_types_refused(self) -> None:
        """Only JSON types are encodable."""
        self.assertRaises(ValueError, encode_canonical_json, {"a": object()})
        self.assertRaises(ValueError, encode_canonical_json, {"a": b"bytes"})

    def test_tuples_are_arrays(self) -> None:
        """Tuples encode as arrays (frozen events use them)."""
        self.assertEqual(encode_canonical_json({"a": (1, 2)}), b'{"a":[1,2]}')


class DecodeTests(SynchronousTestCase):
    """decode_json refusals."""

    def test_duplicate_keys(self) -> None:
        """Duplicate keys are refused, nested too."""
        self.assertRaises(ValueError, decode_json, b'{"a": 1, "a": 2}', False)
        self.assertRaises(ValueError, decode_json, b'{"x": {"a": 1, "a": 1}}', True)

    def test_invalid_utf8(self) -> None:
        """Invalid UTF-8 is refused."""
        self.assertRaises(ValueError, decode_json, b'{"a": "\xff"}', False)
        self.assertRaises(ValueError, decode_json, b'{"a": "\xc3"}', True)

    def test_constants(self) -> None:
        """NaN / Infinity are refused."""
        for text in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}'):
            self.assertRaises(ValueError, decode_json, text, False)

    def test_strict_floats(self) -> None:
        """Strict decoding refuses floats and exponents; lenient accepts."""
        for text in (b'{"a": 1.5}', b'{"a": 1e3}', b'{"a": 1.0}'):
            self.assertRaises(ValueError, decode_json, text, True)
        self.assertEqual(decode_json(b'{"a": 1.5}', False), {"a": 1.5})

    def test_strict_int_range(self) -> None:
        """Strict decoding refuses integers out of the canonical range."""
        self.assertEqual(decode_json(b'{"a": 9007199254740991}', True), {"a": 2**53 - 1})
        self.assertRaises(ValueError, decode_json, b'{"a": 9007199254740992}', True)
        self.assertRaises(ValueError, decode_json, b'{"a": -9007199254740992}', True)
        self.assertEqual(decode_json(b'{"a": 9007199254740992}', False), {"a": 2**53})

    def test_negative_zero(self) -> None:
        """-0 reads as 0."""
        self.assertEqual(decode_json(b"[-0]", True), [0])

    def test_lone_surrogate_escape(self) -> None:
        """An escaped lone surrogate is refused (it could not be hashed)."""
        self.assertRaises(ValueError, decode_json, b'{"a": "\\ud800"}', False)
        self.assertRaises(ValueError, decode_json, b'{"\\udc00": 1}', False)
        self.assertEqual(decode_json(b'{"a": "\\ud83d\\ude00"}', True), {"a": "\U0001f600"})

    def test_syntax_errors(self) -> None:
        """Malformed JSON raises ValueError."""
        for text in (b"", b"{", b"{'a': 1}", b"[1,]", b'{"a" 1}'):
            self.assertRaises(ValueError, decode_json, text, False)

    def test_deep_nesting(self) -> None:
        """Absurd nesting is a ValueError, not a crash."""
        self.assertRaises(ValueError, decode_json, b"[" * 100000 + b"]" * 100000, False)

    def test_check_strict_values(self) -> None:
        """check_strict_canonical_values refuses floats and big integers."""
        check_strict_canonical_values({"a": [1, "x", None, True]})
        self.assertRaises(ValueError, check_strict_canonical_values, {"a": [1.0]})
        self.assertRaises(ValueError, check_strict_canonical_values, {"a": 2**53})


class PropertyTests(SynchronousTestCase):
    """Property tests over generated JSON values."""

    @settings(max_examples=300, deadline=None)
    @given(json_values)
    def test_encode_decode_stable(self, value: object) -> None:
        """decode(encode(v)) == v and encoding that again is byte-identical."""
        encoded = encode_canonical_json(value)
        decoded = decode_json(encoded, strict=True)
        self.assertEqual(decoded, value)
        self.assertEqual(encode_canonical_json(decoded), encoded)

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.text(), st.integers(0, 10), min_size=1, max_size=8))
    def test_keys_sorted_by_code_point(self, value: dict[str, int]) -> None:
        """Object keys come out in code point order, whatever the insertion
        order."""
        encoded = encode_canonical_json(value)
        decoded_pairs = json.loads(encoded, object_pairs_hook=lambda pairs: pairs)
        keys = [k for k, _ in decoded_pairs]
        self.assertEqual(keys, sorted(value, key=lambda k: [ord(c) for c in k]))
        reversed_dict = dict(reversed(list(value.items())))
        self.assertEqual(encode_canonical_json(reversed_dict), encoded)
