"""Streaming reader for PyTorch profiler (Kineto) Chrome traces.

A profiled 128k-token prefill writes traces of hundreds of MB per rank.
``json.load`` on such a file needs minutes and roughly ten times the file
size in RAM, and all we want from it are the GPU kernel events.  So:

* the fast path searches the text for the ``"cat": "kernel"`` marker.  In
  Kineto's fixed key order it reads name and dur straight off the text;
  otherwise it JSON-decodes the object around the hit, accepted only when it
  spans the marker and is itself a kernel event (a JSON string cannot hold
  an unescaped ``"cat"``, so a start guessed inside a string fails to decode
  instead of producing a wrong event).  Other events are counted by their
  ``"ph":`` key, never decoded.
* the strict path (``strict=True``, or automatically when the fast path
  meets a layout it cannot verify) decodes every element of the
  ``traceEvents`` array one by one and rejects malformed JSON anywhere in it.

Both paths hold at most a chunk plus one event in memory and read plain or
gzipped files (detected by magic bytes, not by the name).
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import itertools
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

CHUNK_CHARS = 16 << 20
# Upper bound on one event's text.  It is also the tail kept between chunks,
# so an event cut by a chunk boundary is seen whole in the next round.
MAX_EVENT_CHARS = 1 << 20
# How much text may precede the traceEvents array (deviceProperties etc.).
MAX_HEADER_CHARS = 64 << 20

_KERNEL_MARKER = re.compile(r'"cat"\s*:\s*"(?i:kernel)"')
# torch.profiler (Kineto) writes every kernel event as
#   {"ph": "X", "cat": "kernel", "name": ..., "pid": ..., "tid": ..., "ts": ..., "dur": ..., "args": {...}}
# Reading name and dur straight off that layout skips decoding the bulky
# "args"; any other layout goes through a real JSON decode.
_JSON_STR = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_JSON_NUM = r"-?[0-9][0-9.eE+-]*"
_KINETO_HEAD = re.compile(r'\{\s*"ph"\s*:\s*"X"\s*,\s*\Z')
_KINETO_TAIL = re.compile(
    r'\s*,\s*"name"\s*:\s*(' + _JSON_STR + r")"
    r'\s*,\s*"pid"\s*:\s*(?:' + _JSON_STR + r"|-?\d+)"
    r'\s*,\s*"tid"\s*:\s*(?:' + _JSON_STR + r"|-?\d+)"
    r'\s*,\s*"ts"\s*:\s*' + _JSON_NUM +
    r'\s*,\s*"dur"\s*:\s*(' + _JSON_NUM + r")(?=\s*[,}])"
)
# Kineto indents with a handful of spaces; farther back we just decode.
_HEAD_LOOKBACK = 96
_EVENTS_KEY = re.compile(r'"traceEvents"\s*:\s*\[')
_NON_SPACE = re.compile(r"\S")
_SPACE = re.compile(r"\s*")
# Keys that mark one trace event; counted rather than decoded on the fast path.
_PH_KEYS = ('"ph":', '"ph" :')
# A kernel name may itself contain "{" ("{lambda()#1}") ahead of the marker in
# traces that put "name" before "cat"; try a few opening braces before giving
# the file to the strict path.
_MAX_START_TRIES = 8

_decoder = json.JSONDecoder()

ProgressFn = Callable[[int], None]


class TraceError(Exception):
    """A trace that cannot be read; the message names the file."""


class _NeedStrict(Exception):
    """The fast path met text it cannot verify; the strict path decides."""


@dataclass
class TraceStats:
    """Kernel totals of one or more trace files (e.g. all ranks of a run)."""

    files: list = field(default_factory=list)
    # Events counted by their "ph" key: every Chrome trace event has one.
    total_events: int = 0
    # Raw kernel name -> [launches, summed duration in integer nanoseconds].
    # Integer ns keep sums exact, so report sections add up to the digit.
    kernels: dict = field(default_factory=dict)
    # Kernel events without a string name or a numeric duration.
    skipped_kernels: int = 0
    notes: list = field(default_factory=list)

    def add_kernel(self, event: dict) -> None:
        # Flow/instant events may reuse the category; only complete ("X")
        # events carry a duration.
        if event.get("ph", "X") != "X":
            return
        name = event.get("name")
        dur = event.get("dur")
        if (
            not isinstance(name, str)
            or isinstance(dur, bool)
            or not isinstance(dur, (int, float))
        ):
            self.skipped_kernels += 1
            return
        self.add_launch(name, round(dur * 1000))

    def add_launch(self, name: str, ns: int) -> None:
        entry = self.kernels.get(name)
        if entry is None:
            self.kernels[name] = [1, ns]
        else:
            entry[0] += 1
            entry[1] += ns

    def merge(self, other: "TraceStats") -> None:
        self.files.extend(other.files)
        self.total_events += other.total_events
        self.skipped_kernels += other.skipped_kernels
        self.notes.extend(other.notes)
        for name, (count, ns) in other.kernels.items():
            entry = self.kernels.get(name)
            if entry is None:
                self.kernels[name] = [count, ns]
            else:
                entry[0] += count
                entry[1] += ns


def _is_kernel(obj) -> bool:
    if not isinstance(obj, dict):
        return False
    cat = obj.get("cat")
    return isinstance(cat, str) and cat.lower() == "kernel"


# --------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------


def _text_chunks(path: Path, on_bytes: Optional[ProgressFn]) -> Iterator[str]:
    """Decoded text of ``path`` in chunks; reports compressed bytes read."""
    raw = open(path, "rb")
    try:
        is_gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw
        # newline="" keeps the text byte-for-byte; errors="replace" because a
        # stray byte in one kernel name must not sink a 1 GB trace.
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
        seen = 0
        while True:
            try:
                chunk = text.read(CHUNK_CHARS)
            except (OSError, EOFError, zlib.error) as exc:
                raise TraceError(f"{path}: corrupt or truncated gzip data ({exc})") from None
            if on_bytes is not None:
                pos = raw.tell()
                on_bytes(pos - seen)
                seen = pos
            if not chunk:
                return
            yield chunk
    finally:
        raw.close()


# --------------------------------------------------------------------------
# Fast path
# --------------------------------------------------------------------------


def _decode_event_at(buf: str, mstart: int, mend: int):
    """Decode the kernel event whose text holds the marker at [mstart, mend)."""
    hi = mstart
    for _ in range(_MAX_START_TRIES):
        start = buf.rfind("{", 0, hi)
        if start < 0:
            return None
        try:
            obj, end = _decoder.raw_decode(buf, start)
        except ValueError:
            hi = start
            continue
        if end >= mend and _is_kernel(obj):
            return obj, end
        hi = start
    return None


def _kineto_kernel(buf: str, marker, stats: TraceStats) -> int:
    """Record a kernel event in Kineto's layout without decoding it.

    Returns the position just after its "dur" value, or -1 when the text
    around the marker has another layout.
    """
    tail = _KINETO_TAIL.match(buf, marker.end())
    if tail is None:
        return -1
    ms = marker.start()
    if _KINETO_HEAD.search(buf, max(0, ms - _HEAD_LOOKBACK), ms) is None:
        return -1
    raw_name, raw_dur = tail.group(1), tail.group(2)
    try:
        dur = float(raw_dur)
        name = json.loads(raw_name) if "\\" in raw_name else raw_name[1:-1]
    except ValueError:
        return -1
    stats.add_launch(name, round(dur * 1000))
    return tail.end()


def _safe_cut(buf: str, lo: int, hi: int) -> int:
    """A split point in [lo, hi]: an opening brace, else ``lo``.

    Neither the marker nor a "ph" key contains "{", so no match straddles a
    cut made at one.  ``lo`` is the start of the buffer or the end of the
    last kernel read (after its "}" or its "dur" digits), which is as safe.
    """
    if hi <= lo:
        return lo
    idx = buf.rfind("{", lo, hi)
    return idx if idx >= 0 else lo


def _scan_fast(path: Path, chunks: Iterable[str], stats: TraceStats) -> None:
    leftover = ""
    scan_from = 0
    first_char = None
    last_char = None
    has_events_key = False
    for chunk in itertools.chain(chunks, [None]):
        eof = chunk is None
        if not eof:
            tail = chunk.rstrip()
            if tail:
                last_char = tail[-1]
        buf = leftover + chunk if chunk else leftover
        if first_char is None:
            m = _NON_SPACE.search(buf)
            if m is None:
                leftover = ""
                if eof:
                    raise TraceError(f"{path}: empty file, not a JSON trace")
                continue
            first_char = buf[m.start()]
            if first_char not in "{[":
                raise TraceError(
                    f"{path}: not a JSON trace (starts with {first_char!r}, "
                    "expected '{' or '[')"
                )
        if first_char == "{" and not has_events_key:
            has_events_key = _EVENTS_KEY.search(buf) is not None

        last_end = 0
        cut = None
        next_scan = 0
        for m in _KERNEL_MARKER.finditer(buf, scan_from):
            if m.start() < last_end:
                continue  # a nested look-alike inside the event just decoded
            end = _kineto_kernel(buf, m, stats)
            if end >= 0:
                # Just after "dur": a safe cut point, and the next event
                # starts beyond it.
                last_end = end
                continue
            hit = _decode_event_at(buf, m.start(), m.end())
            if hit is None:
                if not eof and len(buf) - m.start() < MAX_EVENT_CHARS:
                    # Probably cut by the chunk boundary: retry with more text.
                    cut = _safe_cut(buf, last_end, m.start() - MAX_EVENT_CHARS)
                    next_scan = m.start() - cut
                    break
                raise _NeedStrict(f"cannot isolate the kernel event at character {m.start()}")
            obj, last_end = hit
            stats.add_kernel(obj)
        if cut is None:
            cut = len(buf) if eof else _safe_cut(buf, last_end, len(buf) - MAX_EVENT_CHARS)
        for key in _PH_KEYS:
            stats.total_events += buf.count(key, 0, cut)
        leftover = buf[cut:]
        scan_from = next_scan

    if first_char == "{" and not has_events_key:
        raise TraceError(f'{path}: no "traceEvents" array, not a PyTorch profiler trace')
    if last_char not in ("}", "]"):
        raise TraceError(
            f"{path}: truncated JSON (ends with {last_char!r}); was the profiler "
            "still writing it?"
        )


# --------------------------------------------------------------------------
# Strict path
# --------------------------------------------------------------------------


class _Buffer:
    """Text window over a chunk iterator with an absolute offset for errors."""

    def __init__(self, chunks: Iterable[str]):
        self._chunks = iter(chunks)
        self.text = ""
        self.pos = 0
        self.offset = 0  # absolute character offset of text[0]
        self.eof = False

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = next(self._chunks, None)
        if chunk is None:
            self.eof = True
            return False
        # Drop consumed text first so the window stays about one chunk long.
        self.offset += self.pos
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return True

    def skip_space(self) -> Optional[str]:
        """Move past whitespace; the next character, or None at end of file."""
        while True:
            self.pos = _SPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return None

    def where(self) -> str:
        return f"character {self.offset + self.pos}"


def _find_events_array(path: Path, buf: _Buffer) -> None:
    first = buf.skip_space()
    if first is None:
        raise TraceError(f"{path}: empty file, not a JSON trace")
    if first == "[":
        buf.pos += 1
        return
    if first != "{":
        raise TraceError(
            f"{path}: not a JSON trace (starts with {first!r}, expected '{{' or '[')"
        )
    while True:
        m = _EVENTS_KEY.search(buf.text, buf.pos)
        if m is not None:
            buf.pos = m.end()
            return
        if buf.offset + len(buf.text) > MAX_HEADER_CHARS or not buf.more():
            raise TraceError(f'{path}: no "traceEvents" array, not a PyTorch profiler trace')


def _scan_strict(path: Path, chunks: Iterable[str], stats: TraceStats) -> None:
    buf = _Buffer(chunks)
    _find_events_array(path, buf)
    expect_value = True  # right after "[" or ","
    first = True
    while True:
        ch = buf.skip_space()
        if ch is None:
            raise TraceError(f"{path}: truncated JSON: traceEvents array never closed")
        if ch == "]" and (first or not expect_value):
            return
        if not expect_value:
            if ch != ",":
                raise TraceError(f"{path}: invalid JSON at {buf.where()}: expected ',' or ']'")
            buf.pos += 1
            expect_value = True
            continue
        while True:
            try:
                obj, end = _decoder.raw_decode(buf.text, buf.pos)
                break
            except ValueError as exc:
                # Either the event runs past the window (read on) or it is
                # broken; an event larger than MAX_EVENT_CHARS counts as broken.
                if len(buf.text) - buf.pos > MAX_EVENT_CHARS or not buf.more():
                    msg = getattr(exc, "msg", str(exc))
                    raise TraceError(f"{path}: invalid JSON at {buf.where()}: {msg}") from None
        buf.pos = end
        expect_value = False
        first = False
        if isinstance(obj, dict):
            if "ph" in obj:
                stats.total_events += 1
            if _is_kernel(obj):
                stats.add_kernel(obj)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def read_trace_file(
    path, *, strict: bool = False, on_bytes: Optional[ProgressFn] = None
) -> TraceStats:
    """Kernel totals of one trace file (plain or gzipped Chrome trace JSON)."""
    path = Path(path)
    if strict:
        stats = TraceStats(files=[str(path)])
        _scan_strict(path, _text_chunks(path, on_bytes), stats)
        return stats
    counted = [0]

    def count_bytes(n: int) -> None:
        counted[0] += n
        if on_bytes is not None:
            on_bytes(n)

    stats = TraceStats(files=[str(path)])
    try:
        _scan_fast(path, _text_chunks(path, count_bytes), stats)
    except _NeedStrict as why:
        if on_bytes is not None:
            on_bytes(-counted[0])  # the file is read again from the start
        stats = TraceStats(files=[str(path)])
        stats.notes.append(f"{path}: read in strict mode ({why})")
        _scan_strict(path, _text_chunks(path, on_bytes), stats)
    return stats


def _list_traces(directory: Path, pattern: Optional[str], stage: Optional[str]) -> list:
    entries = [f for f in directory.iterdir() if f.is_file()]
    if pattern:
        found = [f for f in entries if fnmatch.fnmatch(f.name, pattern)]
    else:
        # SGLang writes server_args.json next to the traces.
        json_files = [
            f
            for f in entries
            if f.name.endswith((".json", ".json.gz")) and f.name != "server_args.json"
        ]
        found = [f for f in json_files if "trace" in f.name] or json_files
    if stage:
        tag = "-" + stage.upper()
        found = [f for f in found if tag in f.name.upper()]
    return sorted(found)


def find_trace_files(path, *, pattern: Optional[str] = None, stage: Optional[str] = None):
    """Trace files for a CLI argument: a file, or a directory of per-rank traces.

    A directory without traces of its own but with run subdirectories (the
    ``<output_dir>/<timestamp>/`` layout of SGLang's profiler) resolves to
    its newest run.  Returns ``(files, notes)``.
    """
    root = Path(path)
    if not root.exists():
        raise TraceError(f"{path}: no such file or directory")
    if root.is_file():
        return [root], []
    if not root.is_dir():
        raise TraceError(f"{path}: not a regular file or directory")
    notes = []
    files = _list_traces(root, pattern, stage)
    if not files:
        runs = [d for d in root.iterdir() if d.is_dir() and _list_traces(d, pattern, stage)]
        if runs:
            latest = max(runs, key=lambda d: (d.stat().st_mtime, d.name))
            files = _list_traces(latest, pattern, stage)
            if len(runs) > 1:
                notes.append(f"{path}: {len(runs)} runs found, using the newest: {latest.name}")
    if not files:
        wanted = pattern or "*.json / *.json.gz"
        if stage:
            wanted += f" with -{stage.upper()} in the name"
        raise TraceError(f"{path}: directory holds no trace files ({wanted})")
    merged = [f for f in files if f.name.startswith("merged-")]
    if merged and len(merged) < len(files):
        # SGLang's merged-*.trace.json.gz repeats the per-rank events.
        files = [f for f in files if not f.name.startswith("merged-")]
        notes.append(f"{path}: skipped {len(merged)} merged-* trace(s) that repeat the per-rank ones")
    if not stage:
        names = " ".join(f.name.upper() for f in files)
        if "-EXTEND" in names and "-DECODE" in names:
            notes.append(
                f"{path}: mixes EXTEND and DECODE traces; pass --stage to compare one stage"
            )
    return files, notes


def read_traces(
    path,
    *,
    pattern: Optional[str] = None,
    stage: Optional[str] = None,
    strict: bool = False,
    on_bytes: Optional[ProgressFn] = None,
) -> TraceStats:
    """Kernel totals of a file or of all per-rank traces in a directory."""
    files, notes = find_trace_files(path, pattern=pattern, stage=stage)
    total = TraceStats()
    total.notes.extend(notes)
    for f in files:
        total.merge(read_trace_file(f, strict=strict, on_bytes=on_bytes))
    return total
