# The kernel surface shared by the C extension (_speedups.c) and its pure-Python
# twin (_pure.py). homeserver.state.v2 and homeserver.state.interning are
# written against this surface only.
from typing import Any, Callable, Hashable, Mapping, Sequence

IMPLEMENTATION: str
FLAG_POWER: int
FLAG_POWER_LEVELS: int
FLAG_REJECTED: int
FLAG_STATE: int

class StateSet:
    def __len__(self) -> int: ...
    def get(self, key: int) -> int | None: ...
    def items(self) -> list[tuple[int, int]]: ...

def separate(
    state_sets: Sequence[Mapping[Hashable, str]], missing_is_conflict: bool
) -> tuple[dict[Hashable, str], dict[Hashable, list[str]]]: ...
def separate_interned(
    state_sets: Sequence[StateSet], missing_is_conflict: bool
) -> tuple[StateSet, dict[int, list[int]]]: ...

class Graph:
    index: dict[str, int]
    key_index: dict[Hashable, int]
    keys: list[Hashable]
    def __len__(self) -> int: ...
    def add_key(self, key: Hashable) -> int: ...
    def add_event(
        self,
        event_id: str,
        auth: Sequence[int],
        ts: int,
        power: int,
        flags: int,
        key: int,
        pl_auth: int,
        auth_keys: Sequence[int],
    ) -> int: ...
    def event_id(self, idx: int) -> str: ...
    def event_key(self, idx: int) -> int: ...
    def flags(self, idx: int) -> int: ...
    def set_rejected(self, idx: int, rejected: bool) -> None: ...
    def lookup(self, event_ids: Sequence[str]) -> list[int]: ...
    def set_room_config(
        self,
        infinite_creators: bool,
        limit_notifications: bool,
        knock_join_rule: bool,
        restricted_join_rule: bool,
        knock_restricted_join_rule: bool,
        create_key: int,
        power_levels_key: int,
        join_rules_key: int,
        named_defaults: Sequence[int],
        no_power_levels_creator_level: int,
    ) -> None: ...
    def set_auth_info(
        self,
        idx: int,
        kind: int,
        code: int,
        type_id: int,
        sender_id: int,
        sender_domain: int,
        room_key: int,
        sender_member_key: int,
        target_id: int,
        target_domain: int,
        target_member_key: int,
        rule9: bool,
        power_levels_table: Any,
        create_info: Any,
    ) -> None: ...
    def auth_stats(self) -> tuple[int, int]: ...
    def intern_state(self, mapping: Mapping[Hashable, str]) -> StateSet: ...
    def state_to_dict(self, state: StateSet, like: StateSet | None = None) -> dict[Hashable, str]: ...
    def merge_state(self, base: StateSet, overlay: dict[int, int]) -> StateSet: ...
    def auth_difference(self, common: StateSet | Sequence[int], per_set: Sequence[Sequence[int]]) -> list[int]: ...
    def conflicted_subgraph(self, conflicted: Sequence[int]) -> list[int]: ...
    def power_sort(self, full_conflicted: Sequence[int]) -> list[int]: ...
    def mainline_sort(self, events: Sequence[int], power_levels: int) -> list[int]: ...
    def iterative_auth(
        self,
        order: Sequence[int],
        base: StateSet,
        overlay: dict[int, int],
        check: Callable[[int, list[int]], bool],
    ) -> None: ...
