"""TensorBoard adapter: event files (``events.out.tfevents.*``) read completely, runs written with SummaryWriter.

Megatron-LM, NeMo, torchtitan, fairseq, Levanter, Lightning's TensorBoardLogger, PyTorch's ``SummaryWriter``,
tensorboardX and TF2's ``tf.summary`` all write the same files: TFRecord framing around serialized ``Event`` protos.

Layout: ``tracker.path`` is a log dir; every folder under it holding event files is one run, its id and name the
folder's path relative to the log dir (the log dir itself may be a run: it is then named after its own folder). A
sub-folder that only holds an hparams session (``SummaryWriter.add_hparams`` writes one, named after the time, with
its metric_dict as one point per tag) belongs to the run folder above it: its hparams join that run's config, its
metrics that run's ``summary.*`` (for keys the run's own history lacks). ``artifacts/`` folders of runs are skipped.

Reading is complete, never sampled (TensorBoard's ``EventAccumulator`` keeps a 10,000-point reservoir sample per tag
by default; it is not used): the TFRecord framing (u64 length, masked CRC32C of the length, payload, masked CRC32C of
the payload) is decoded here with both CRCs checked by a vectorised CRC32C (numpy, every record of a file at once),
and each payload is parsed as ``event_pb2.Event``. Scalars are read from

- ``simple_value`` (PyTorch ``SummaryWriter.add_scalar``, tensorboardX, TF1), and
- scalar tensors (TF2 ``tf.summary.scalar``, ``add_scalar(new_style=True)``): ``value.tensor`` of dtype float,
  double or half with an empty shape whose tag carries the ``scalars`` plugin (TF2 writes the metadata only with a
  tag's first point; the plugin is remembered per tag and file).

Other summaries (histograms, images, text, ...) are not metrics and are not read. Configs come from the hparams
plugin's session-start summary (``config.<name>``; whole numbers come back as ints) and from Lightning's
``hparams.yaml`` beside the events (nested keys flattened; it wins over the plugin's copy of the same key, which
Lightning flattens with ``/``). The run's state: ``crashed`` when its newest event file ends in a torn record (a run
killed mid-write: the readable prefix is kept), else the hparams session-end status (``finished``, ``failed``,
``running``), else ``finished``. ``created_at`` is the earliest event wall time; ``summary.<tag>`` the value at each
tag's last step.

Restarts: several event files in one run folder are merged on the step; a step logged more than once keeps the
value with the later wall time (file order breaks ties), and the number of such steps is a warning. A bad CRC in
the middle of a file skips to the next valid record (found by scanning forward for a position where the length, its
CRC and the payload CRC all check out); the skipped bytes are counted in a warning naming the file.

Cache: each run folder's history goes to the history cache (``toolkit.cache.HistoryCache``, one entry per folder)
and what its row needs (keys, last values, hparams, state, warnings) to one index entry of the log dir, both under a
version made of the folder's event files' names, sizes and modification times (and its hparams file's): an
unchanged run is never parsed again, and its warnings come back with it. Cached histories are loaded in threads.

Folders linked into the log dir are followed (each folder once). Large reads (``POOL_MIN_BYTES`` or more) are parsed
in forked worker processes, one per CPU core (``tracker.workers``; protobuf parsing holds the GIL, so threads would
not help; fork, not spawn, so that the main script is never run again in a child), where fork exists and no other
thread runs; else, or where processes cannot be started, in this process.

Write side: ``start_run(name, config)`` logs through ``torch.utils.tensorboard.SummaryWriter`` into
``<path>/<name>/`` (scalars as double-precision scalar tensors, so values come back exactly), the config as an
hparams session-start summary, a session-end status (``running`` from the start, ``finished`` or ``failed`` at
``finish``), and ``log_artifact`` copies into
``<path>/<name>/artifacts/``. A run started again under the same name writes a new event file beside the old one:
a restart, merged when read.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import stat
import struct
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import pandas as pd

from toolkit.cache import HistoryCache
from toolkit.errors import UserError, require_extra
from toolkit.progress import progress_bar
from toolkit.protocol import RunWriterBase, TrackerBase
from toolkit.runset import CONFIG_PREFIX, SUMMARY_PREFIX, Selection, flatten_config, history_frame, runs_frame
from toolkit.settings import Settings, bounded, fail

log = logging.getLogger(__name__)

EVENT_PREFIX = "events.out.tfevents."
ARTIFACTS = "artifacts"
FORMAT = 2  # of what is cached per run folder; bump when the parse changes
SCALARS_PLUGIN, HPARAMS_PLUGIN = "scalars", "hparams"
SESSION_START_TAG, SESSION_END_TAG = "_hparams_/session_start_info", "_hparams_/session_end_info"
STATUS_NAMES = {1: "finished", 2: "failed", 3: "running"}  # tensorboard.hparams.Status (0: unknown)
WRITE_STATUS = {"finished": 1, "success": 1, "failed": 2, "crashed": 2, "killed": 2, "running": 3}
POOL_MIN_BYTES = 256 << 20  # parse in worker processes only when there is this much to read (about 15 s of work)
INDEX_ID = "/"  # the cache entry holding every run folder's meta ("/" is no folder's relative path)
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


# --------------------------------------------------------------------------------------------- CRC32C
_POLY = 0x82F63B78  # Castagnoli, reflected
_MASK_DELTA = 0xA282EAD8
_SMALL = 256  # records up to this many bytes are one lane each; longer ones are cut into lanes of this size


@functools.lru_cache(maxsize=None)
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The byte table, and two 16-bit tables that advance the register over 4 bytes at once (slice-by-4)."""
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    x = np.arange(65536, dtype=np.uint32)

    def four_zero_bytes(v: np.ndarray) -> np.ndarray:
        for _ in range(4):
            v = t[v & 0xFF] ^ (v >> 8)
        return v

    return t, four_zero_bytes(x.copy()), four_zero_bytes(x << 16)


def _apply_int(cols: Sequence[int], x: int) -> int:
    """A GF(2)-linear map on 32-bit registers (given by the images of the 32 bits) applied to one register."""
    out = 0
    for bit, col in enumerate(cols):
        if x >> bit & 1:
            out ^= col
    return out


def _apply(cols: Sequence[int], v: np.ndarray) -> np.ndarray:
    """The same map applied to every register of ``v``."""
    out = np.zeros_like(v)
    for bit in range(32):
        out ^= np.where((v >> np.uint32(bit)) & np.uint32(1), np.uint32(cols[bit]), np.uint32(0))
    return out


@functools.lru_cache(maxsize=None)
def _zero_powers() -> tuple[tuple[int, ...], ...]:
    """``Z^(2^m)`` for m = 0..47, Z being the register's advance over one zero byte."""
    t = _tables()[0]
    z = tuple(int(t[(1 << b) & 0xFF]) ^ ((1 << b) >> 8) for b in range(32))
    powers = [z]
    for _ in range(47):
        powers.append(tuple(_apply_int(powers[-1], c) for c in powers[-1]))
    return tuple(powers)


_INIT_TERMS: dict[int, int] = {}


def _init_terms(lengths: np.ndarray) -> np.ndarray:
    """CRC32C of ``L`` zero bytes for each length: what the standard initial value and final xor add to a CRC
    computed from a zero register (CRC32C(m) = raw0(m) ^ CRC32C(0^len(m)))."""
    uniq = np.unique(lengths)
    todo = [int(u) for u in uniq if int(u) not in _INIT_TERMS]
    if todo:
        powers = _zero_powers()
        lens = np.asarray(todo, dtype=np.int64)
        v = np.full(len(lens), 0xFFFFFFFF, dtype=np.uint32)
        for m in range(int(lens.max()).bit_length()):
            sel = ((lens >> m) & 1).astype(bool)
            if sel.any():
                v[sel] = _apply(powers[m], v[sel])
        if len(_INIT_TERMS) > 100_000:
            _INIT_TERMS.clear()
        _INIT_TERMS.update(zip(todo, (int(x) ^ 0xFFFFFFFF for x in v)))
    terms = np.fromiter((_INIT_TERMS[int(u)] for u in uniq), dtype=np.uint32, count=len(uniq))
    return terms[np.searchsorted(uniq, lengths)]


def _raw_lanes(data: np.ndarray, ends: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CRC register (started at zero, no final xor) of each lane ``data[end - length:end]``, every lane at once.

    Lanes are grouped by width (their length rounded up to 8 bytes); a shorter lane is padded with zero bytes in
    front, which leaves a zero-started register unchanged. Lanes are at most ``_SMALL`` bytes long."""
    _, lo, hi = _tables()
    out = np.zeros(len(ends), dtype=np.uint32)
    widths = np.maximum((lengths + 7) // 8 * 8, 8)
    windows = np.lib.stride_tricks.sliding_window_view
    prefix = None
    for width in np.unique(widths):
        width = int(width)
        sel = np.flatnonzero(widths == width)
        first = ends[sel] - width
        if len(data) >= width:
            block = windows(data, width)[np.maximum(first, 0)]  # (lanes, width) copy
        else:
            block = np.zeros((len(sel), width), dtype=np.uint8)
        near = first < 0  # lanes within the first bytes: read from a copy with zeros in front
        if near.any():
            if prefix is None:
                prefix = np.concatenate([np.zeros(_SMALL, np.uint8), data[:_SMALL]])
            block[near] = windows(prefix, width)[first[near] + _SMALL]
        pad = width - lengths[sel]
        if pad.any():
            block[np.arange(width)[None, :] < pad[:, None]] = 0
        words = np.ascontiguousarray(block.view("<u4").T)  # one row per 4-byte column
        crc = np.zeros(len(sel), dtype=np.uint32)
        for row in words:
            crc ^= row
            crc = lo[crc & 0xFFFF] ^ hi[crc >> 16]
        out[sel] = crc
    return out


def crc32c_many(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CRC32C of ``data[start:start + length]`` for every (start, length), vectorised over all of them.

    Records up to 256 bytes are one lane each; a longer one is cut into 256-byte lanes (its first lane shorter),
    whose registers are combined pairwise (shifting the left one over the right one's length with a precomputed
    GF(2) matrix), so a 10 MB record costs a few numpy passes, not a Python loop over its bytes."""
    data = np.asarray(data, dtype=np.uint8)
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if not len(starts):
        return np.zeros(0, dtype=np.uint32)
    ends = starts + lengths
    small = lengths <= _SMALL
    if small.all():
        return _raw_lanes(data, ends, lengths) ^ _init_terms(lengths)
    raw = np.zeros(len(starts), dtype=np.uint32)
    if small.any():
        raw[small] = _raw_lanes(data, ends[small], lengths[small])
    for i in np.flatnonzero(~small):
        n_lanes = int(-(-lengths[i] // _SMALL))
        size = 1 << (n_lanes - 1).bit_length()  # leading zero lanes up to a power of two change nothing
        lane_ends = ends[i] - _SMALL * np.arange(n_lanes - 1, -1, -1, dtype=np.int64)
        lane_lens = np.full(n_lanes, _SMALL, dtype=np.int64)
        lane_lens[0] = lengths[i] - _SMALL * (n_lanes - 1)
        regs = np.zeros(size, dtype=np.uint32)
        regs[size - n_lanes:] = _raw_lanes(data, lane_ends, lane_lens)
        level = 8  # a lane is 2^8 bytes; at each level the right half is 2^level bytes long
        while len(regs) > 1:
            regs = _apply(_zero_powers()[level], regs[0::2]) ^ regs[1::2]
            level += 1
        raw[i] = regs[0]
    return raw ^ _init_terms(lengths)


def crc32c(data: bytes) -> int:
    """CRC32C of one buffer."""
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    return int(crc32c_many(buf, np.zeros(1, np.int64), np.array([len(buf)], np.int64))[0])


def masked(crc: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC: ((crc >> 15 | crc << 17) + 0xa282ead8) mod 2^32."""
    crc = np.asarray(crc, dtype=np.uint32)
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(_MASK_DELTA)


def masked_crc32c(data: bytes) -> int:
    """The masked CRC32C of one buffer, as TFRecord stores it."""
    return int(masked(np.array([crc32c(data)], dtype=np.uint32))[0])


# --------------------------------------------------------------------------------------------- TFRecord framing
def frame_records(payloads: Iterable[bytes]) -> bytes:
    """TFRecord framing of ``payloads`` (the CRCs vectorised): what an event file holds."""
    payloads = [bytes(p) for p in payloads]
    if not payloads:
        return b""
    lengths = np.array([len(p) for p in payloads], dtype=np.int64)
    heads = b"".join(_U64.pack(int(n)) for n in lengths)
    body = b"".join(payloads)
    head_crc = masked(crc32c_many(np.frombuffer(heads, np.uint8), np.arange(len(payloads)) * 8,
                                  np.full(len(payloads), 8)))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    body_crc = masked(crc32c_many(np.frombuffer(body, np.uint8), offsets, lengths))
    parts = []
    for i, p in enumerate(payloads):
        parts += [heads[8 * i:8 * i + 8], _U32.pack(int(head_crc[i])), p, _U32.pack(int(body_crc[i]))]
    return b"".join(parts)


def write_records(path: str | os.PathLike, payloads: Iterable[bytes], append: bool = False) -> Path:
    """Write (or append) TFRecord-framed payloads to ``path``; e.g. serialized ``Event`` protos as an event file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab" if append else "wb") as fh:
        fh.write(frame_records(payloads))
    return path


@dataclass
class Framed:
    """The records of one event file: header offsets and payload lengths, and what could not be read."""

    offsets: np.ndarray
    lengths: np.ndarray
    skipped: list[tuple[int, int]] = field(default_factory=list)  # (offset, bytes) followed by a valid record
    torn: tuple[int, int] | None = None  # (offset, bytes) of an unreadable tail: no valid record after it


def _u32_at(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(arr, 4)[idx].view("<u4").reshape(-1)


def _walk(buf: bytes, pos: int, n: int, limit: int = 1 << 16) -> tuple[list[int], list[int], int, bool]:
    """Follow the length fields from ``pos`` (unchecked) while a whole record fits, at most ``limit`` records;
    also whether it stopped at that limit (rather than at the end or at a record that does not fit)."""
    unpack = _U64.unpack_from
    offs: list[int] = []
    lens: list[int] = []
    add_off, add_len = offs.append, lens.append
    while n - pos >= 16:
        if len(offs) >= limit:
            return offs, lens, pos, True
        length = unpack(buf, pos)[0]
        end = pos + 16 + length
        if end > n:
            break
        add_off(pos)
        add_len(length)
        pos = end
    return offs, lens, pos, False


def _checks(arr: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each record's length CRC and payload CRC check out."""
    head = masked(crc32c_many(arr, offs, np.full(len(offs), 8, np.int64))) == _u32_at(arr, offs + 8)
    body = masked(crc32c_many(arr, offs + 12, lens)) == _u32_at(arr, offs + 12 + lens)
    return head, body


def _valid_at(buf: bytes, arr: np.ndarray, q: int, n: int) -> bool:
    if q < 0 or n - q < 16:
        return False
    length = _U64.unpack_from(buf, q)[0]
    if q + 16 + length > n:
        return False
    head, body = _checks(arr, np.array([q], np.int64), np.array([length], np.int64))
    return bool(head[0] and body[0])


def _resync(buf: bytes, arr: np.ndarray, start: int, n: int, hint: int | None, window: int = 1 << 20) -> int | None:
    """The first position after ``start`` where a valid record begins (``hint`` first: where a record whose
    length checked out but whose payload did not would end), or None."""
    if hint is not None and _valid_at(buf, arr, hint, n):
        return hint
    last = n - 16  # the last position a record could start at
    lo = start + 1
    while lo <= last:
        hi = min(lo + window, last + 1)
        qs = np.arange(lo, hi, dtype=np.int64)
        head = masked(crc32c_many(arr, qs, np.full(len(qs), 8, np.int64))) == _u32_at(arr, qs + 8)
        for q in qs[head]:
            if _valid_at(buf, arr, int(q), n):
                return int(q)
        lo = hi
    return None


def read_records(buf: bytes) -> Framed:
    """Decode the TFRecord framing of a whole file, checking both CRCs of every record.

    A stretch that does not check out is skipped up to the next valid record (counted in ``skipped``); one with no
    valid record after it is the file's torn tail (``torn``: a writer killed mid-record)."""
    arr = np.frombuffer(buf, dtype=np.uint8)
    n = len(buf)
    pos = 0
    offs_parts: list[np.ndarray] = []
    lens_parts: list[np.ndarray] = []
    skipped: list[tuple[int, int]] = []
    torn = None
    while pos < n:
        offs, lens, stop, limited = _walk(buf, pos, n)
        hint = None
        if offs:
            o = np.asarray(offs, dtype=np.int64)
            ln = np.asarray(lens, dtype=np.int64)
            head, body = _checks(arr, o, ln)
            good = head & body
            i = len(good) if good.all() else int(np.argmin(good))  # the first bad record
            offs_parts.append(o[:i])
            lens_parts.append(ln[:i])
            if i == len(good):
                pos = stop
                if pos >= n or limited:
                    continue  # the end, or the walk's batch limit: walk on
                bad = pos
            else:
                bad = int(o[i])
                if head[i]:
                    hint = int(o[i] + 16 + ln[i])
        else:
            bad = pos
        nxt = _resync(buf, arr, bad, n, hint)
        if nxt is None:
            torn = (bad, n - bad)
            break
        skipped.append((bad, nxt - bad))
        pos = nxt
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64))
    return Framed(cat(offs_parts), cat(lens_parts), skipped, torn)


# --------------------------------------------------------------------------------------------- events
@functools.lru_cache(maxsize=None)
def _protos() -> Any:
    """The tensorboard package's protos (imported on first use: the extra is optional)."""
    require_extra("tensorboard", "tensorboard")
    from tensorboard.compat.proto import event_pb2, summary_pb2, types_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2

    return event_pb2, summary_pb2, types_pb2, plugin_data_pb2


def _proto_value(value: Any) -> Any:
    """A google.protobuf.Value as a Python value."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":  # an int when whole (the plugin keeps every number as a double)
        number = value.number_value
        return int(number) if math.isfinite(number) and number == int(number) and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind in ("list_value", "struct_value"):
        from google.protobuf import json_format

        return json_format.MessageToDict(value)
    return None


@dataclass
class _Points:
    """Scalar points of one run folder, in file and record order, and what else its events said."""

    tags: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    walls: list = field(default_factory=list)
    values: list = field(default_factory=list)
    hparams: list = field(default_factory=list)  # (wall, order, {name: value})
    statuses: list = field(default_factory=list)  # (wall, order, state)
    first_wall: float | None = None
    odd_tensors: dict = field(default_factory=dict)  # tag -> points under the scalars plugin that are not scalars
    undecodable: int = 0


def _tensor_scalar(tensor: Any, types_pb2: Any) -> float | None:
    """The value of a float/double/half tensor of empty shape, else None."""
    kinds = {types_pb2.DT_FLOAT: ("<f4", "float_val"), types_pb2.DT_DOUBLE: ("<f8", "double_val"),
             types_pb2.DT_HALF: ("<f2", "half_val")}
    if len(tensor.tensor_shape.dim) or tensor.dtype not in kinds:
        return None
    fmt, repeated = kinds[tensor.dtype]
    content = tensor.tensor_content
    if content:
        return float(np.frombuffer(content, fmt)[0]) if len(content) == np.dtype(fmt).itemsize else None
    vals = getattr(tensor, repeated)
    if len(vals) != 1:
        return None
    return float(np.array([vals[0]], np.uint16).view(np.float16)[0]) if fmt == "<f2" else float(vals[0])


def _decode(buf: bytes, framed: Framed, acc: _Points, file_no: int) -> None:
    """Parse every record of one file as an ``Event`` and collect its scalars, hparams and session status."""
    event_pb2, _, types_pb2, plugin_data_pb2 = _protos()
    from_string = event_pb2.Event.FromString
    decode_error = _decode_error()
    add_tag, add_step, add_wall, add_value = acc.tags.append, acc.steps.append, acc.walls.append, acc.values.append
    plugins: dict[str, str] = {}
    offsets = (framed.offsets + 12).tolist()
    ends = (framed.offsets + 12 + framed.lengths).tolist()
    view = memoryview(buf)
    for s, e in zip(offsets[:1], ends[:1]):  # the first event (file_version) dates the file
        try:
            wall = from_string(view[s:e]).wall_time
        except decode_error:
            break
        if acc.first_wall is None or wall < acc.first_wall:
            acc.first_wall = wall
    for s, e in zip(offsets, ends):
        try:
            event = from_string(view[s:e])
        except decode_error:
            acc.undecodable += 1
            continue
        vals = event.summary.value
        n_vals = len(vals)
        if not n_vals:
            continue
        step = event.step
        wall = event.wall_time
        for i in range(n_vals):
            v = vals[i]
            tag = v.tag
            if v.HasField("simple_value"):  # cheaper than WhichOneof, and by far the most common case
                value = v.simple_value
            else:
                plugin = v.metadata.plugin_data.plugin_name if v.HasField("metadata") else ""
                if plugin:
                    plugins.setdefault(tag, plugin)
                else:
                    plugin = plugins.get(tag, "")
                if plugin != SCALARS_PLUGIN or v.WhichOneof("value") != "tensor":
                    if plugin == HPARAMS_PLUGIN and v.HasField("metadata"):
                        try:
                            data = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                        except decode_error:
                            acc.undecodable += 1
                            continue
                        which = data.WhichOneof("data")
                        order = (file_no, s)
                        if which == "session_start_info":
                            hp = {str(name): _proto_value(val) for name, val in data.session_start_info.hparams.items()}
                            acc.hparams.append((wall, order, hp))
                        elif which == "session_end_info" and data.session_end_info.status in STATUS_NAMES:
                            acc.statuses.append((wall, order, STATUS_NAMES[data.session_end_info.status]))
                    continue
                value = _tensor_scalar(v.tensor, types_pb2)
                if value is None:
                    acc.odd_tensors[tag] = acc.odd_tensors.get(tag, 0) + 1
                    continue
            add_tag(tag)
            add_step(step)
            add_wall(wall)
            add_value(value)


@functools.lru_cache(maxsize=None)
def _decode_error() -> type:
    from google.protobuf.message import DecodeError

    return DecodeError


# --------------------------------------------------------------------------------------------- one run folder
@dataclass
class FolderMeta:
    """What one run folder's events say, besides the history itself (JSON-able: cached with it)."""

    keys: list[str]
    rows: int  # steps in the history (rows of the wide frame)
    most_points: int  # the most points any key has (after merging re-logged steps)
    last: dict[str, float]  # value at each key's last step
    hparams: dict[str, Any]
    hparams_conflicts: list[str]
    yaml_config: dict[str, Any] | None
    status: str | None
    torn_last: bool  # the newest event file ends in a torn record
    created: float | None
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FolderMeta | None":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None


@dataclass
class FolderRead:
    """One run folder read: the wide history (steps x keys) and its meta."""

    steps: np.ndarray
    matrix: np.ndarray
    meta: FolderMeta

    def frame(self) -> pd.DataFrame:
        wide = pd.DataFrame(self.matrix, columns=list(self.meta.keys))
        wide.insert(0, "step", self.steps)
        return wide


def _file_order(name: str) -> tuple[float, str]:
    """Event files sort by the timestamp in their name (``events.out.tfevents.<time>.<host>...``), then name."""
    m = re.match(re.escape(EVENT_PREFIX) + r"(\d+(?:\.\d+)?)", name)
    return (float(m.group(1)) if m else math.inf, name)


def _wide(points: _Points) -> tuple[list[str], np.ndarray, np.ndarray, int, dict[str, float], int]:
    """Points -> (keys, steps, matrix, most points of a key, last values, re-logged steps). A (step, key) logged
    more than once keeps the value with the latest wall time (the later record on a tie)."""
    n = len(points.values)
    if not n:
        return [], np.zeros(0, np.int64), np.zeros((0, 0)), 0, {}, 0
    codes, keys = pd.factorize(np.asarray(points.tags, dtype=object), sort=True)
    keys = [str(k) for k in keys]
    steps = np.asarray(points.steps, dtype=np.int64)
    values = np.asarray(points.values, dtype=np.float64)
    uniq, rows = np.unique(steps, return_inverse=True)
    n_keys = len(keys)
    cells = rows.astype(np.int64) * n_keys + codes
    matrix = np.full(len(uniq) * n_keys, np.nan)
    hits = np.bincount(cells, minlength=len(matrix))
    relogged = 0
    if int(hits.max()) <= 1:
        matrix[cells] = values
    else:
        walls = np.asarray(points.walls, dtype=np.float64)
        order = np.lexsort((np.arange(n), walls, cells))
        cells_sorted = cells[order]
        last = np.ones(n, dtype=bool)
        last[:-1] = cells_sorted[1:] != cells_sorted[:-1]
        matrix[cells_sorted[last]] = values[order][last]
        relogged = len(np.unique(np.flatnonzero(hits > 1) // n_keys))
    matrix = matrix.reshape(len(uniq), n_keys)
    present = (hits > 0).reshape(len(uniq), n_keys)
    counts = present.sum(axis=0)
    last_row = len(uniq) - 1 - np.argmax(present[::-1], axis=0)
    last_values = {k: float(matrix[last_row[j], j]) for j, k in enumerate(keys)}
    return keys, uniq, matrix, int(counts.max()), last_values, relogged


def _read_yaml(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warnings.append(f"{path}: not read as the run's config ({first})")
        return None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        warnings.append(f"{path}: not read as the run's config (expected a mapping, got {type(data).__name__})")
        return None
    flat = flatten_config({str(k): v for k, v in data.items()})
    return {k: json.loads(json.dumps(v, default=str)) for k, v in flat.items()}  # dates and the like as text


def _merge_hparams(hparams: dict[str, Any], conflicts: list[str], new: Mapping[str, Any]) -> None:
    """Merge ``new`` into ``hparams`` (later values win), noting each key whose value changed in ``conflicts``."""
    for k, v in new.items():
        if k in hparams and hparams[k] != v and k not in conflicts:
            conflicts.append(k)
        hparams[k] = v


def parse_folder(folder: str, files: Sequence[str], hparams_file: str | None = "hparams.yaml",
                 label: str | None = None) -> FolderRead:
    """Read one run folder's event files (``files``: names inside ``folder``) completely."""
    folder_path = Path(folder)
    label = label or folder
    files = sorted(files, key=_file_order)
    acc = _Points()
    warnings: list[str] = []
    torn_last = False
    for file_no, name in enumerate(files):
        path = folder_path / name
        try:
            buf = path.read_bytes()
        except OSError as exc:
            warnings.append(f"{path}: could not be read ({type(exc).__name__}: {exc.strerror or exc}); skipped")
            continue
        framed = read_records(buf)
        _decode(buf, framed, acc, file_no)
        if framed.skipped:
            lost = sum(b for _, b in framed.skipped)
            where = ", ".join(f"byte {o}" for o, _ in framed.skipped[:3])
            warnings.append(f"{path}: {lost} bytes with a bad CRC skipped ({len(framed.skipped)} stretch(es), "
                            f"from {where}); the records after them were read")
        if framed.torn is not None:
            offset, nbytes = framed.torn
            newest = file_no == len(files) - 1
            torn_last = torn_last or newest
            what = ("the run is marked crashed" if newest
                    else "a later event file of the run goes on (a restart), so the run is not marked crashed")
            warnings.append(f"{path}: the last {nbytes} bytes (from byte {offset}) are a torn record (a writer "
                            f"killed mid-write); kept the {len(framed.offsets)} records before it, {what}")
    if acc.undecodable:
        warnings.append(f"run folder {label}: {acc.undecodable} record(s) with good CRCs did not parse as a "
                        f"TensorBoard Event; skipped")
    for tag, count in sorted(acc.odd_tensors.items()):
        warnings.append(f"run folder {label}: {count} point(s) of tag '{tag}' under the scalars plugin are not "
                        f"float scalars (dtype or shape); skipped")
    keys, steps, matrix, most, last, relogged = _wide(acc)
    if relogged:
        where = f"across {len(files)} event files" if len(files) > 1 else f"in {files[0]}"
        warnings.append(f"run {label}: {relogged} step(s) logged more than once {where} (a restart from a "
                        f"checkpoint?); kept the value with the later wall time at each")
    hparams: dict[str, Any] = {}
    conflicts: list[str] = []
    for _, _, hp in sorted(acc.hparams, key=lambda h: (h[0], h[1])):
        _merge_hparams(hparams, conflicts, hp)
    status = max(acc.statuses, key=lambda s: (s[0], s[1]))[2] if acc.statuses else None
    yaml_config = _read_yaml(folder_path / hparams_file, warnings) if hparams_file else None
    return FolderRead(steps, matrix, FolderMeta(keys, len(steps), most, last, hparams, conflicts, yaml_config,
                                                status, torn_last, acc.first_wall, warnings))


# --------------------------------------------------------------------------------------------- discovery
@dataclass
class _Folder:
    """A folder under the log dir holding event files."""

    rel: str  # path relative to the log dir ("." for the log dir itself)
    path: Path
    files: list[str]
    stats: list[tuple[str, int, int]]  # (name, size, mtime_ns) of its event files and its hparams file
    parent: str | None = None  # the nearest folder above it that holds event files

    @property
    def size(self) -> int:
        return sum(s for _, s, _ in self.stats)

    def version(self) -> str:
        text = json.dumps([FORMAT, self.rel, sorted(self.stats)])
        return hashlib.sha1(text.encode("utf-8")).hexdigest()


def discover(root: Path, hparams_file: str | None, warnings: list[str]) -> list[_Folder]:
    """Every folder under ``root`` (``root`` included) that holds event files, in path order."""
    found: dict[str, _Folder] = {}
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # runs linked into a log dir count
        here = Path(dirpath)
        try:
            st = here.stat()
        except OSError:
            st = None
        # an unreadable folder is skipped; a link back up the tree (or a folder linked twice) is read once only
        if st is None or (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        events = []
        for name in sorted(filenames):
            if not name.startswith(EVENT_PREFIX) or name.endswith((".tmp", ".lock")):
                continue
            try:
                st = (here / name).stat()
            except OSError as exc:
                warnings.append(f"{here / name}: skipped ({type(exc).__name__})")
                continue
            if not stat.S_ISREG(st.st_mode):
                warnings.append(f"{here / name}: skipped, not a regular file")
                continue
            events.append((name, int(st.st_size), int(st.st_mtime_ns)))
        if not events:
            continue
        stats = list(events)
        if hparams_file:
            with contextlib.suppress(OSError):
                st = (here / hparams_file).stat()
                stats.append((hparams_file, int(st.st_size), int(st.st_mtime_ns)))
        if ARTIFACTS in dirnames:  # copies logged by the run, not runs
            dirnames.remove(ARTIFACTS)
        rel = here.relative_to(root).as_posix()
        found[rel] = _Folder(rel, here, [e[0] for e in events], stats)
    for folder in found.values():
        folder.parent = next((up for up in map(Path.as_posix, Path(folder.rel).parents) if up in found), None)
    return [found[k] for k in sorted(found)]


def _fork_context() -> Any:
    """The multiprocessing context for worker processes: ``fork`` (the children inherit the loaded modules and
    never import the main script again, as ``spawn`` would), only where fork exists, not on macOS, and only while
    this process runs no other thread (a lock one holds would stay locked in the children) but tqdm's monitor (it
    sleeps, and the children never touch tqdm). Else None."""
    import multiprocessing
    import sys
    import threading

    if sys.platform == "darwin" or "fork" not in multiprocessing.get_all_start_methods():
        return None
    main = threading.main_thread()
    if any(t is not main and t.name != "tqdm_monitor" for t in threading.enumerate()):
        return None
    return multiprocessing.get_context("fork")


# --------------------------------------------------------------------------------------------- the tracker
@dataclass
class TensorBoardSettings(Settings):
    """tracker=tensorboard: a log dir of TensorBoard event files (conf/tracker/tensorboard.yaml)."""

    path: Optional[str] = None
    workers: Optional[int] = bounded(None, "an integer >= 1 (or null: one per CPU core)", ge=1)
    hparams_file: Optional[str] = "hparams.yaml"
    who: ClassVar[str] = "tracker"

    def __post_init__(self) -> None:
        super().__post_init__()
        name = self.hparams_file
        if name is not None and (not name.strip() or "/" in name):
            raise fail(self.who, "hparams_file", name, "a file name (or null)")


class TensorBoardTracker(TrackerBase):
    """Run folders of TensorBoard event files through the adapter protocol (read: RunSet; write: RunWriter)."""

    name = "tensorboard"
    settings_type = TensorBoardSettings

    def setup(self, settings: TensorBoardSettings) -> None:
        """The log dir, the worker count and the hparams file name; the caches of what was parsed."""
        self.path = settings.path or None
        self.workers, self.hparams_file = settings.workers, settings.hparams_file
        self._folders: dict[str, _Folder] = {}
        self._metas: dict[str, FolderMeta] = {}
        self._reads: dict[str, tuple[str, FolderRead]] = {}  # folder -> (version, what was parsed)
        self._runs: dict[str, str] = {}  # run id -> folder
        self.stats: dict[str, int] = {"parsed": 0, "cached": 0}
        self.last_workers = 0  # processes the last parse used (1: this one)

    # ------------------------------------------------------------------ helpers
    @property
    def root(self) -> Path:
        """The log dir (a UserError when unset)."""
        if not self.path:
            raise UserError("tracker.path: set the TensorBoard log dir (a folder of run folders holding "
                            "events.out.tfevents.* files), e.g. tracker.path=runs/")
        return Path(self.path).expanduser()

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            log.warning(message)
            self.warnings.append(message)

    def _cache(self) -> HistoryCache | None:
        try:
            return HistoryCache.from_settings(self._cache_settings, self.name, str(self.root.resolve()))
        except OSError as exc:  # pragma: no cover - an unusable cache folder must not stop the read
            self._warn(f"tensorboard: history cache disabled ({type(exc).__name__})")
            return None

    def _run_id(self, rel: str) -> str:
        if rel != ".":
            return rel
        name = self.root.resolve().name or "."
        return name if name not in self._folders else "."

    def _n_workers(self, todo: Sequence[_Folder]) -> int:
        wanted = self.workers if self.workers is not None else min(os.cpu_count() or 1, 8)
        if wanted <= 1 or len(todo) < 2:
            return 1
        if self.workers is None and sum(f.size for f in todo) < POOL_MIN_BYTES:
            return 1  # starting processes costs more than it saves
        return min(wanted, len(todo))

    # ------------------------------------------------------------------ read side: runs
    def _load(self, selection: Selection | None) -> None:
        """Find the run folders and learn what each one's events say: held, cached or parsed now."""
        root = self.root
        if not root.exists():
            raise UserError(f"tracker.path: {root} does not exist; expected a TensorBoard log dir")
        if not root.is_dir():
            raise UserError(f"tracker.path: {root} is not a folder; expected a TensorBoard log dir "
                            f"(the folder holding the events.out.tfevents.* files)")
        found: list[str] = []
        folders = discover(root, self.hparams_file, found)
        for message in found:
            self._warn(message)
        if not folders:
            raise UserError(f"tracker.path: no TensorBoard event files (events.out.tfevents.*) under {root}")
        self._folders = {f.rel: f for f in folders}
        cache = self._cache()
        index = self._index(cache)
        todo: list[_Folder] = []
        for folder in self._prefilter(folders, selection):
            version = folder.version()
            held = self._reads.get(folder.rel)
            if held is not None and held[0] == version:  # parsed by this tracker already
                self._metas[folder.rel] = held[1].meta
                continue
            self._reads.pop(folder.rel, None)
            self._metas.pop(folder.rel, None)
            entry = index.get(folder.rel)
            meta = FolderMeta.from_json(entry.get("meta")) if isinstance(entry, dict) and \
                entry.get("version") == version else None
            if meta is not None:
                self._metas[folder.rel] = meta
                self.stats["cached"] += 1
            else:
                todo.append(folder)
        if todo:
            self._parse(todo, cache)
            if cache is not None:
                self._save_index(cache, index)

    def _index(self, cache: HistoryCache | None) -> dict[str, Any]:
        """The cached metas of this log dir's run folders: ``{folder: {"version", "meta"}}`` (one cache entry)."""
        hit = cache.load(INDEX_ID, []) if cache is not None else None
        data = hit.fingerprint if hit is not None else None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("folders"), dict):
            return {}
        return data["folders"]

    def _save_index(self, cache: HistoryCache, index: Mapping[str, Any]) -> None:
        folders = {rel: entry for rel, entry in index.items() if rel in self._folders}  # gone folders drop out
        for rel, (version, read) in self._reads.items():
            folders[rel] = {"version": version, "meta": read.meta.to_json()}
        self._cache_save(cache, INDEX_ID, [], pd.DataFrame({"step": np.zeros(0, np.int64)}), "index",
                         {"format": FORMAT, "folders": folders})

    def _cache_save(self, cache: HistoryCache, run_id: str, keys: Sequence[str], frame: pd.DataFrame, version: str,
                    fingerprint: Mapping[str, Any] | None = None) -> None:
        """``cache.save``, where a cache that cannot be written is a warning, not a failed read."""
        try:
            cache.save(run_id, keys, frame, version, fingerprint)
        except (OSError, TypeError, ValueError) as exc:
            self._warn(f"tensorboard: could not write the history cache under {cache.dir}: {type(exc).__name__}")

    def _prefilter(self, folders: list[_Folder], selection: Selection | None) -> list[_Folder]:
        """The folders worth reading for a selection by name or run id (the rest are filtered out anyway)."""
        if selection is None or not (selection.name_regex or selection.run_ids):
            return folders
        try:
            pattern = re.compile(selection.name_regex) if selection.name_regex else None
        except re.error:
            return folders  # read_runset names the bad regex
        ids = set(selection.run_ids)

        def admitted(rel: str) -> bool:
            rid = self._run_id(rel)
            return (pattern is None or bool(pattern.search(rid))) and (not ids or rid in ids)

        keep = {f.rel for f in folders if admitted(f.rel)}
        keep |= {f.rel for f in folders if f.parent in keep}  # hparams sessions of kept runs
        return [f for f in folders if f.rel in keep]

    def _parse(self, todo: list[_Folder], cache: HistoryCache | None) -> None:
        workers = self._n_workers(todo)
        context = _fork_context() if workers > 1 else None
        if workers > 1 and context is None:
            if self.workers is not None:
                self._warn(f"tracker.workers={self.workers}: parsed in this process (worker processes are forked, "
                           f"which is not possible here or not safe while other threads run)")
            workers = 1
        self.last_workers = workers
        jobs = [(str(f.path), list(f.files), self.hparams_file, f.rel) for f in todo]
        done: set[int] = set()
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor
            from concurrent.futures.process import BrokenProcessPool

            _protos(), _tables(), _zero_powers(), _decode_error()  # imported and built before forking
            by_size = sorted(range(len(todo)), key=lambda i: -todo[i].size)  # big ones first
            try:
                with warnings.catch_warnings(), ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                    warnings.filterwarnings("ignore", r".*fork\(\) may lead to deadlocks", DeprecationWarning)
                    futures = {i: pool.submit(parse_folder, *jobs[i]) for i in by_size}
                    with progress_bar(len(todo), "reading TensorBoard event files", self._progress) as bar:
                        for i in range(len(todo)):
                            self._store(todo[i], futures[i].result(), cache)
                            done.add(i)
                            bar.update(1)
            except (BrokenProcessPool, OSError) as exc:  # no processes here (a sandbox, a memory limit)
                self._warn(f"tensorboard: parsing in {workers} worker processes failed ({type(exc).__name__}); "
                           f"parsing the rest in this process")
        rest = [i for i in range(len(todo)) if i not in done]
        if rest:
            with progress_bar(len(rest), "reading TensorBoard event files", self._progress) as bar:
                for i in rest:
                    self._store(todo[i], parse_folder(*jobs[i]), cache)
                    bar.update(1)

    def _store(self, folder: _Folder, read: FolderRead, cache: HistoryCache | None) -> None:
        version = folder.version()
        self._reads[folder.rel] = (version, read)
        self._metas[folder.rel] = read.meta
        self.stats["parsed"] += 1
        if cache is not None and read.meta.keys:
            self._cache_save(cache, folder.rel, read.meta.keys, read.frame(), version)

    def list_runs(self, selection: Selection) -> pd.DataFrame:
        """Runs table: one row per run folder (hparams sessions folded into the run above them)."""
        self._load(selection)
        sessions: dict[str, list[str]] = {}
        runs: list[str] = []
        for rel, folder in self._folders.items():
            meta = self._metas.get(rel)
            if meta is None:
                continue
            # a folder that only holds an hparams session (what ``add_hparams`` writes): hparams and at most one
            # point per scalar tag
            if folder.parent in self._metas and meta.hparams and meta.most_points <= 1:
                sessions.setdefault(folder.parent, []).append(rel)
            else:
                runs.append(rel)
        self._runs = {self._run_id(rel): rel for rel in runs}
        return runs_frame([self._row(run_id, rel, sessions.get(rel, [])) for run_id, rel in self._runs.items()])

    def _row(self, run_id: str, rel: str, sessions: list[str]) -> dict[str, Any]:
        meta = self._metas[rel]
        metas = [meta, *(self._metas[s] for s in sorted(sessions, key=lambda s: (self._metas[s].created or 0.0, s)))]
        for message in (m for each in metas for m in each.warnings):
            self._warn(message)
        hparams = dict(meta.hparams)
        conflicts = list(meta.hparams_conflicts)
        metrics: dict[str, float] = {}
        for sub_meta in metas[1:]:
            _merge_hparams(hparams, conflicts, sub_meta.hparams)
            metrics.update(sub_meta.last)
        created = min((m.created for m in metas if m.created is not None), default=None)
        status = next((m.status for m in metas if m.status is not None), None)
        if conflicts:
            shown = ", ".join(conflicts[:5]) + (f" (+{len(conflicts) - 5} more)" if len(conflicts) > 5 else "")
            self._warn(f"run {run_id}: hparams logged more than once with different values ({shown}); "
                       f"kept the latest")
        config = dict(meta.yaml_config or {})
        for k, v in hparams.items():
            if k not in config and k.replace("/", ".") not in config:
                config[k] = v
        row: dict[str, Any] = {"run_id": run_id, "name": run_id,
                               "state": "crashed" if meta.torn_last else status or "finished",
                               "created_at": pd.Timestamp(created, unit="s", tz="UTC") if created else pd.NaT,
                               "tags": ""}
        row.update({CONFIG_PREFIX + k: v for k, v in sorted(config.items())})
        summary = {**{k: v for k, v in metrics.items() if k not in meta.last}, **meta.last}
        row.update({SUMMARY_PREFIX + k: v for k, v in sorted(summary.items())})
        return row

    # ------------------------------------------------------------------ read side: histories
    def _arrays_of(self, rel: str, cache: HistoryCache | None, parse: bool) -> tuple | None:
        """One run folder's (steps, matrix, keys): held from this tracker's parse, else cached, else (``parse``)
        parsed now; None when it is neither held nor cached and ``parse`` is false."""
        held = self._reads.get(rel)  # (``_load`` drops what no longer matches the files)
        if held is None:
            folder, meta = self._folders[rel], self._metas[rel]
            if not meta.keys:
                return np.zeros(0, np.int64), np.zeros((0, 0)), []
            hit = cache.load(rel, meta.keys) if cache is not None else None
            if hit is not None and hit.version == folder.version():
                return _arrays(hit.frame, meta.keys)
            if not parse:
                return None
            self._parse([folder], cache)
            held = self._reads[rel]
        read = held[1]
        return read.steps, read.matrix, list(read.meta.keys)

    def read_history(self, runs: pd.DataFrame, keys: Sequence[str] | None) -> pd.DataFrame:
        """Full history (run_id, step, one float column per key) of the given runs; every key when None (rows
        where none of the asked keys was logged are left out).

        Each run's rows go straight into one preallocated table at an offset known from its meta, cached runs
        loaded and copied in threads (parquet decoding and numpy copies release the GIL), so nothing is held
        twice."""
        run_ids = [str(r) for r in runs["run_id"]] if len(runs) else []
        if any(r not in self._runs for r in run_ids):
            self.list_runs(Selection(run_ids=run_ids))
            unknown = [r for r in run_ids if r not in self._runs]
            if unknown:
                raise UserError(f"tensorboard: no run folder {', '.join(unknown[:5])} under {self.root}")
        wanted = list(dict.fromkeys(str(k) for k in keys)) if keys else None
        cache = self._cache()
        rels = [self._runs[r] for r in run_ids]
        metrics = wanted if wanted is not None else sorted({k for rel in rels for k in self._metas[rel].keys})
        column = {k: j for j, k in enumerate(metrics)}
        rows = np.array([len(self._reads[r][1].steps) if r in self._reads else self._metas[r].rows for r in rels],
                        dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
        values = np.empty((int(rows.sum()), len(metrics)))
        steps_out = np.empty(len(values), dtype=np.int64)
        kept = np.zeros(len(rels), dtype=np.int64)

        def put(i: int, arrays: tuple | None) -> bool:
            if arrays is None or len(arrays[0]) != rows[i]:
                return False
            steps, matrix, run_keys = arrays
            src = [j for j, k in enumerate(run_keys) if k in column]
            dst = [column[run_keys[j]] for j in src]
            whole = dst == list(range(len(metrics)))
            if wanted is not None and len(steps):  # leave out the rows where none of the asked keys was logged
                block = matrix[:, src] if not (whole and len(src) == matrix.shape[1]) else matrix
                keep = ~np.isnan(block).all(axis=1) if src else np.zeros(len(steps), dtype=bool)
                if not keep.all():
                    steps, block = steps[keep], block[keep]
                matrix, src = block, list(range(len(dst)))
            n, r0 = len(steps), int(starts[i])
            target = values[r0:r0 + n]
            if whole and src == dst:
                target[:] = matrix
            elif n:
                target[:] = np.nan
                target[:, dst] = matrix[:, src]
            steps_out[r0:r0 + n] = steps
            kept[i] = n
            return True

        def fill(i: int) -> bool:
            return put(i, self._arrays_of(rels[i], cache, parse=False))

        todo = list(range(len(rels)))
        if len(todo) > 1 and cache is not None:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(8, len(todo)), thread_name_prefix="tb-history") as pool:
                done = list(pool.map(fill, todo))
        else:
            done = [fill(i) for i in todo]
        for i in [i for i, ok in zip(todo, done) if not ok]:  # not cached (or the cache entry went stale)
            if not put(i, self._arrays_of(rels[i], cache, parse=True)):
                return self._history_by_run(run_ids, rels, wanted, cache)  # files changed under us: start over
        if int(kept.sum()) < len(values):
            take = np.concatenate([np.arange(s, s + k) for s, k in zip(starts, kept)])
            values, steps_out = values[take], steps_out[take]
        return history_frame(run_ids, kept, steps_out, values, metrics)

    def _history_by_run(self, run_ids: list[str], rels: list[str], wanted: list[str] | None,
                        cache: HistoryCache | None) -> pd.DataFrame:
        """The plain way: each run's history read (or parsed) and placed one after the other."""
        blocks = []
        for run_id, rel in zip(run_ids, rels):
            steps, matrix, run_keys = self._arrays_of(rel, cache, parse=True)
            if wanted is not None:
                sub = np.full((len(steps), len(wanted)), np.nan)
                have = [i for i, k in enumerate(wanted) if k in run_keys]
                sub[:, have] = matrix[:, [run_keys.index(wanted[i]) for i in have]]
                keep = ~np.isnan(sub).all(axis=1)
                steps, matrix, run_keys = steps[keep], sub[keep], wanted
            blocks.append((steps, matrix, run_keys))
        metrics = wanted if wanted is not None else sorted({k for *_, ks in blocks for k in ks})
        column = {k: j for j, k in enumerate(metrics)}
        values = np.full((sum(len(b[0]) for b in blocks), len(metrics)), np.nan)
        row = 0
        for steps, matrix, run_keys in blocks:
            values[row:row + len(steps), [column[k] for k in run_keys]] = matrix
            row += len(steps)
        steps_out = np.concatenate([b[0] for b in blocks]) if blocks else np.zeros(0, np.int64)
        kept = np.array([len(b[0]) for b in blocks], dtype=np.int64)
        return history_frame(run_ids, kept, steps_out, values, metrics)

    # ------------------------------------------------------------------ write side
    def start_run(self, name: str, config: Mapping[str, Any] | None = None) -> "TensorBoardRunWriter":
        """Start writing run ``name`` into ``<path>/<name>/`` (a name used before adds a new event file: a restart)."""
        parts = Path(str(name)).parts
        if not str(name).strip() or Path(str(name)).is_absolute() or ".." in parts or name in (".",):
            raise UserError(f"tensorboard: run name '{name}' must be a relative folder name inside tracker.path")
        return TensorBoardRunWriter(self.root / str(name), str(name), config)


def _arrays(frame: pd.DataFrame, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(steps, matrix, keys) of a cached wide frame (positional: selecting columns by name costs more than the
    copy)."""
    keys = list(keys)
    if list(frame.columns) != ["step", *keys]:
        frame = frame.reindex(columns=["step", *keys])
    return frame.iloc[:, 0].to_numpy(np.int64), frame.iloc[:, 1:].to_numpy(np.float64), keys


def _hparam_value(value: Any) -> Any:
    """A config value the hparams plugin can hold: bool, number or text (lists and the rest as JSON text)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


class TensorBoardRunWriter(RunWriterBase):
    """One run written with PyTorch's SummaryWriter: scalars as double tensors, the config as hparams."""

    statuses = WRITE_STATUS

    def __init__(self, folder: str | os.PathLike, name: str, config: Mapping[str, Any] | None = None):
        require_extra("tensorboard", "tensorboard")
        require_extra("torch", "torch")
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(folder)
        self.name = str(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.dir), max_queue=1000, flush_secs=30)
        self._end(WRITE_STATUS["running"])
        if config:
            self.log_config(config)

    def _hparams(self, which: str, info: Any) -> None:
        _, summary_pb2, _, plugin_data_pb2 = _protos()
        data = plugin_data_pb2.HParamsPluginData(version=0, **{which: info})
        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=HPARAMS_PLUGIN, content=data.SerializeToString()))
        value = summary_pb2.Summary.Value(tag=SESSION_START_TAG if which == "session_start_info" else SESSION_END_TAG,
                                          metadata=meta)
        self.writer._get_file_writer().add_summary(summary_pb2.Summary(value=[value]))

    def _end(self, status: int) -> None:
        self._hparams("session_end_info", _protos()[3].SessionEndInfo(status=status, end_time_secs=time.time()))

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Log the flattened config as an hparams session-start summary (None values are left out)."""
        info = _protos()[3].SessionStartInfo(start_time_secs=time.time())
        for key, value in flatten_config(dict(config)).items():
            if value is None:
                continue
            value = _hparam_value(value)
            slot = info.hparams[str(key)]
            if isinstance(value, bool):
                slot.bool_value = value
            elif isinstance(value, (int, float)):
                slot.number_value = float(value)
            else:
                slot.string_value = str(value)
        self._hparams("session_start_info", info=info)

    @property
    def artifact_dir(self) -> Path:
        return self.dir / ARTIFACTS

    def _write_metrics(self, values: dict[str, float], step: int) -> None:
        """Log scalars at a step (double-precision scalar tensors of the scalars plugin)."""
        stamp = time.time()
        for key, number in values.items():
            self.writer.add_scalar(key, number, step, walltime=stamp, new_style=True, double_precision=True)

    def _close(self, status: int) -> None:
        """Write the session-end status (finished / failed; killed and crashed count as failed) and close."""
        self._end(status)
        self.writer.close()


__all__ = ["TensorBoardTracker", "TensorBoardRunWriter", "TensorBoardSettings", "crc32c", "crc32c_many",
           "frame_records", "masked_crc32c", "parse_folder", "read_records", "write_records"]
