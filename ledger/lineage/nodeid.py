"""Marquez's lineage node ids (`nodeId` query parameter), parsed once at the edge.

`dataset:<namespace>:<name>`, `datasetField:<namespace>:<name>:<field>`, `job:<namespace>:<name>`,
`run:<id>`, each optionally followed by `#<version>`. A namespace is often a URI with `:` in it
(`s3://bucket`, `hive://metastore:9083`, `postgres://db:5432`), so the id is ambiguous; this module
follows Marquez's `NodeId.parts` (api/src/main/java/marquez/service/models/NodeId.java):

1. split on `:` and `#`; exactly the expected number of parts: those are the parts;
2. otherwise the delimiters are the `:` *not* followed by `//` or a digit (a scheme or a port), and
   the last part is the rest, colons and all.

Marquez fails outright on an id its rule cannot split (a namespace `team:a`, a name starting with a
digit after a port); `candidates()` yields Marquez's reading first, then every other split, so that
a reader can take the first that names an existing node. Pure: no I/O.

Cost: the readings are worked out once per id and at most `MAX_READINGS` of them, in time linear in
the id's length (an id of a thousand `:` once took half a second: every split was sliced and
compared, and a field id's splits are quadratic in number).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from ledger.errors import InvalidRequestError
from ledger.lineage.names import nfc

KINDS = ("dataset", "datasetField", "job", "run")
MAX_READINGS = 32  # readings of one id a reader may try against the projections
_PARTS = {"dataset": 3, "datasetField": 4, "job": 3, "run": 2}
# Marquez: Pattern.compile("(?:" + ID_DELIM + "(?!//|\\d+))")
_DELIM = re.compile(r":(?!//|\d)")
_USAGE = (
    "nodeId must be dataset:<namespace>:<name>, datasetField:<namespace>:<name>:<field>,"
    " job:<namespace>:<name> or run:<id>"
)


@dataclass(frozen=True)
class NodeRef:
    """One reading of a node id: the names it gives, and a `#version` if it carried one."""

    namespace: str
    name: str
    field: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class NodeId:
    """A parsed `nodeId`: its kind and the text after `<kind>:`."""

    kind: str
    value: str

    @classmethod
    def parse(cls, text: str) -> NodeId:
        kind, sep, rest = text.partition(":")
        if not sep or kind not in KINDS or not rest:
            raise InvalidRequestError(f"{_USAGE}; got {text[:80]!r}", field="nodeId")
        return cls(kind, nfc(rest))  # names are stored in NFC (ledger.lineage.names)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    def marquez_parts(self) -> list[str] | None:
        """The parts Marquez's `NodeId.parts` gives (kind first), or None where Marquez fails."""
        expected = _PARTS[self.kind]
        full = str(self)
        parts = re.split(r"[:#]", full)
        while parts and parts[-1] == "":  # Java's String.split drops trailing empty strings
            parts.pop()
        if len(parts) < expected:
            return None
        if len(parts) == expected:
            return parts
        out: list[str] = []
        start = 0
        for m in _DELIM.finditer(full):
            if len(out) == expected - 1:
                break
            out.append(full[start : m.start()])
            start = m.end()
        if len(out) < expected - 1:
            return None
        out.append(full[start:])
        return out

    def candidates(self) -> Iterator[NodeRef]:
        """Readings of a dataset, field or job id, Marquez's first, then every other split (at most
        `MAX_READINGS`, worked out once)."""
        return iter(self._candidates)

    @cached_property
    def _candidates(self) -> tuple[NodeRef, ...]:
        if self.kind == "run":
            return ()
        seen: dict[NodeRef, None] = {}
        for tried, ref in enumerate(self._readings()):
            if len(seen) >= MAX_READINGS or tried >= 4 * MAX_READINGS:
                break
            if ref.namespace and ref.name and (self.kind != "datasetField" or ref.field):
                seen.setdefault(ref)
        return tuple(seen)

    def _readings(self) -> Iterator[NodeRef]:
        parts = self.marquez_parts()
        if parts is not None:
            *names, last = parts[1:]
            last, hashed, version = last.partition("#")
            yield self._ref([*names, last], version if hashed else None)
            if hashed:
                yield self._ref([*names, f"{last}#{version}"], None)
        # Every other split: the names may hold any character, `:` and `#` included. A split that
        # leaves a name empty is skipped by its positions alone, before any slicing, so the caller's
        # bound on readings bounds the work.
        for body, version in [(self.value, None), *self._versioned()]:
            n = len(body)
            colons = [i for i, c in enumerate(body) if c == ":"]
            if _PARTS[self.kind] - 2 == 1:  # one colon between namespace and name
                for i in reversed(colons):
                    if 0 < i < n - 1:
                        yield self._ref([body[:i], body[i + 1 :]], version)
            else:  # datasetField: namespace, name, field
                for jx in range(len(colons) - 1, 0, -1):
                    j = colons[jx]
                    if j >= n - 1:
                        continue
                    for ix in range(jx - 1, -1, -1):
                        i = colons[ix]
                        if i == 0:
                            break
                        if j - i > 1:
                            yield self._ref([body[:i], body[i + 1 : j], body[j + 1 :]], version)

    def _versioned(self) -> list[tuple[str, str | None]]:
        body, hashed, version = self.value.rpartition("#")
        return [(body, version)] if hashed and body else []

    def _ref(self, names: list[str], version: str | None) -> NodeRef:
        if self.kind == "datasetField":
            return NodeRef(names[0], names[1], names[2] if len(names) > 2 else None, version)
        return NodeRef(names[0], names[1] if len(names) > 1 else "", None, version)

    @property
    def run_id(self) -> str:
        return self.value.partition("#")[0]
