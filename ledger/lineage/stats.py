"""The intervals of Marquez's `GET /api/v1/stats/...` (marquez/db/StatsDao.java), as plain values.

A period is bounded: `DAY` is the 24 hours up to and including the current one, `WEEK` the 7 days
up to and including today, each day from local midnight to local midnight in the given time zone
(23 or 25 hours across a daylight-saving change). Marquez starts DAY's hours in UTC and ignores the
time zone there; here the hours are the zone's (the same ones unless its offset is not a whole hour).

Invariants: intervals are half-open `[start, end)`, contiguous, oldest first, aware and in UTC, and
every bound is a whole minute, so a count grouped by minute (`YYYY-MM-DDTHH:MM`) falls in exactly one.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

PERIODS = ("DAY", "WEEK")
DAY_HOURS = 24
WEEK_DAYS = 7
# Marquez's four event types counted by `/stats/lineage-events` (RUNNING and OTHER are not).
EVENT_TYPES = ("FAIL", "START", "COMPLETE", "ABORT")


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime
    end: datetime


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def time_zone(name: str) -> ZoneInfo | None:
    """The IANA time zone `name`, or None when there is none of that name (no file path is tried)."""
    return ZoneInfo(name) if name in _zones() else None


def intervals(period: str, zone: ZoneInfo, now: datetime) -> list[Interval]:
    """The buckets of `period` ending with the one holding `now`; requires an aware `now`."""
    local = now.astimezone(zone)
    if period == "DAY":
        last = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        first = last - timedelta(hours=DAY_HOURS - 1)
        return [Interval(first + timedelta(hours=i), first + timedelta(hours=i + 1)) for i in range(DAY_HOURS)]
    if period == "WEEK":
        days = [local.date() - timedelta(days=n) for n in range(WEEK_DAYS - 1, -2, -1)]  # 8 midnights
        midnights = [datetime.combine(d, time(0), tzinfo=zone).astimezone(UTC) for d in days]
        return [Interval(a, b) for a, b in itertools.pairwise(midnights)]
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")


def minute_start(key: str) -> datetime:
    """The UTC instant of a minute key `YYYY-MM-DDTHH:MM` (the first 16 characters of a stored time)."""
    return datetime.fromisoformat(key).replace(tzinfo=UTC)


def bucket_of(buckets: list[Interval], moment: datetime) -> int | None:
    """The index of the interval holding `moment`, or None outside them all."""
    i = bisect.bisect_right([b.start for b in buckets], moment) - 1
    return i if i >= 0 and moment < buckets[i].end else None


def cumulative(buckets: list[Interval], before: int, created: Iterable[tuple[str, int]]) -> list[int]:
    """Marquez's running totals: the things created before the first interval plus those created in
    each interval up to and including this one. `created` holds (minute key, count)."""
    per = [0] * len(buckets)
    for key, n in created:
        i = bucket_of(buckets, minute_start(key))
        if i is not None:
            per[i] += n
    out, total = [], before
    for n in per:
        total += n
        out.append(total)
    return out
