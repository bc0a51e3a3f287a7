"""Reader for W&B run files (``run-<id>.wandb``) written by offline (and online) runs, straight from disk.

The file is a LevelDB-style log of ``wandb.proto.wandb_internal_pb2.Record`` messages:

* a 7-byte file header ``<4sHB``: ident ``b":W&B"``, magic ``0xBEE1`` (little-endian), version ``0``;
* then 32 KiB blocks (the header counts towards the first block). Each chunk has a 7-byte header ``<IHB``:
  CRC32 (zlib/IEEE, *unmasked*) of the type byte followed by the data, data length, and type
  (FULL=1, FIRST=2, MIDDLE=3, LAST=4). A chunk never straddles a block boundary; a block tail shorter than
  7 bytes is zero padding. A record larger than what is left of a block is split FIRST/MIDDLE.../LAST.

A run that was killed has no ``exit`` record and may end in a torn chunk: the readable prefix is kept and the
run is flagged. History records are kept as raw bytes while listing and parsed only when histories are read.
"""
from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from adapters.folder_runs import path_kind
from toolkit.errors import UserError
from toolkit.runset import flatten_config

IDENT = b":W&B"
MAGIC = 0xBEE1
VERSION = 0
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
HEADER_LEN = 7
BLOCK_LEN = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_TYPE_CRC = {t: zlib.crc32(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}
RUN_GLOBS = ("offline-run-*", "run-*")


class CorruptRunFile(Exception):
    """The file is not a W&B run file (bad header)."""


def _pb() -> Any:
    """The wandb protobuf module (wandb is an optional dependency)."""
    from toolkit.errors import require_extra

    return require_extra("wandb.proto.wandb_internal_pb2", "wandb", "tracker=wandb")


def encode_records(payloads: Iterable[bytes]) -> bytes:
    """Frame serialized records in the ``.wandb`` log format (for tests and benchmarks)."""
    out = bytearray(FILE_HEADER.pack(IDENT, MAGIC, VERSION))
    for data in payloads:
        first = True
        view = memoryview(data)
        while True:
            left = BLOCK_LEN - len(out) % BLOCK_LEN
            if left < HEADER_LEN:
                out += b"\x00" * left
                left = BLOCK_LEN
            room = left - HEADER_LEN
            piece, view = view[:room], view[room:]
            last = not len(view)
            kind = FULL if first and last else FIRST if first else LAST if last else MIDDLE
            out += CHUNK_HEADER.pack(zlib.crc32(piece, _TYPE_CRC[kind]) & 0xFFFFFFFF, len(piece), kind) + piece
            first = False
            if last:
                break
    return bytes(out)


def split_records(data: bytes) -> tuple[list[bytes], str | None]:
    """Reassembled record payloads of a ``.wandb`` file and, if its tail is torn or corrupt, why."""
    if len(data) < HEADER_LEN:
        raise CorruptRunFile("shorter than the 7-byte header")
    ident, magic, version = FILE_HEADER.unpack_from(data, 0)
    if ident != IDENT or magic != MAGIC:
        raise CorruptRunFile(f"bad header {data[:7]!r} (expected ':W&B' + 0xBEE1)")
    if version != VERSION:
        raise CorruptRunFile(f"unsupported format version {version}")
    records: list[bytes] = []
    append = records.append
    unpack = CHUNK_HEADER.unpack_from
    crc32 = zlib.crc32
    type_crc = _TYPE_CRC
    pos, end = HEADER_LEN, len(data)
    pending: list[bytes] | None = None
    while pos < end:
        block_end = min(pos - pos % BLOCK_LEN + BLOCK_LEN, end)
        while block_end - pos >= HEADER_LEN:  # chunks of one block (the hot loop)
            crc, length, kind = unpack(data, pos)
            start = pos + HEADER_LEN
            stop = start + length
            if stop > block_end or kind not in type_crc:
                if kind == 0 and length == 0 and crc == 0 and data.count(0, pos, block_end) == block_end - pos:
                    pos = block_end  # zero fill up to the block's end
                    break
                if stop > end and kind in type_crc:
                    return records, f"torn record at byte {pos}"
                return records, f"bad chunk header at byte {pos}"
            piece = data[start:stop]
            if crc32(piece, type_crc[kind]) != crc:
                return records, f"checksum mismatch at byte {pos}"
            pos = stop
            if kind == FULL:
                if pending is not None:
                    return records, f"unfinished multi-chunk record before byte {start}"
                append(piece)
            elif kind == FIRST:
                pending = [piece]
            elif pending is None:
                return records, f"chunk without a FIRST at byte {start}"
            else:
                pending.append(piece)
                if kind == LAST:
                    append(b"".join(pending))
                    pending = None
        if pos < block_end:  # fewer than 7 bytes left in the block: padding, or a torn chunk header at the end
            if block_end == end and block_end % BLOCK_LEN and data.count(0, pos, end) != end - pos:
                return records, f"torn chunk header at byte {pos}"
            pos = block_end
    if pending is not None:
        return records, "file ends inside a multi-chunk record"
    return records, None


def _item_key(item: Any) -> str:
    if item.key:
        return item.key
    nested = item.nested_key
    return nested[0] if len(nested) == 1 else ".".join(nested)  # join on a upb container is slow


def _item_json(item: Any) -> str:
    """The JSON text of a history/summary/config item (value_json, or one of the typed values)."""
    if item.value_json:
        return item.value_json
    which = item.WhichOneof("value") if hasattr(item, "WhichOneof") and "value" in item.DESCRIPTOR.oneofs_by_name else None
    if which is None or which == "none":
        return "null"
    value = getattr(item, which)
    return value if which == "json" else json.dumps(value)


@dataclass
class OfflineRun:
    """What one ``.wandb`` file holds: run metadata, config, summary and the raw HistoryRecord bodies."""

    path: Path
    run_id: str = ""
    name: str = ""
    project: str = ""
    entity: str = ""
    group: str = ""
    job_type: str = ""
    sweep_id: str = ""
    tags: list[str] = field(default_factory=list)
    start_time: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary_json: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    problem: str | None = None
    history_payloads: list[bytes] = field(default_factory=list)

    @property
    def state(self) -> str:
        """finished (exit code 0), failed (non-zero exit), crashed (no exit record: killed, or still running)."""
        return "crashed" if self.exit_code is None else "finished" if self.exit_code == 0 else "failed"

    @property
    def summary(self) -> dict[str, Any]:
        """The run's summary: the last value of every updated key (JSON-decoded)."""
        return {key: _json(text, text) for key, text in self.summary_json.items()}

    def row(self) -> dict[str, Any]:
        """This run as a row of RunSet.runs."""
        created_at = pd.Timestamp(self.start_time, unit="s", tz="UTC") if self.start_time else pd.NaT
        return table_row(self.run_id, self.name, self.state, created_at, self.tags, self.config, self.summary)

    def doc(self) -> dict[str, Any]:
        """A W&B-API-like document of this run, for Mongo-style ``filters``."""
        return {
            "name": self.run_id, "id": self.run_id, "display_name": self.name or self.run_id, "state": self.state,
            "tags": list(self.tags), "sweep": self.sweep_id, "group": self.group, "job_type": self.job_type,
            "config": {k: {"value": v} for k, v in self.config.items()}, "summary_metrics": self.summary,
            "createdAt": self.start_time,
        }


def table_row(run_id: str, name: str | None, state: Any, created_at: Any, tags: Iterable[str],
              config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """A W&B run (offline or online) as a row of RunSet.runs: config and public summary flattened, prefixed."""
    row: dict[str, Any] = {"run_id": run_id, "name": name or run_id, "state": state, "created_at": created_at,
                           "tags": ",".join(tags)}
    config = {k: v for k, v in config.items() if not str(k).startswith("_")}
    row.update({f"config.{k}": v for k, v in flatten_config(config).items()})
    row.update({f"summary.{k}": v for k, v in public_summary(summary).items()})
    return row


def public_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Flattened summary without W&B's own underscore keys (``_step``, ``_runtime``, ``_wandb``, media dicts)."""
    flat = flatten_config({k: v for k, v in summary.items() if not str(k).startswith("_")})
    return {k: v for k, v in flat.items() if not any(part.startswith("_") for part in k.split("."))}


def _fast_types() -> dict[str, Any]:
    """Column-oriented views of W&B records (same field numbers, raw bytes), so upb does the per-item work in C.

    Parsing the concatenation of many serialized messages merges them, appending repeated fields: one parse of
    all records yields every history/summary body in order; one parse of all history items yields the keys and
    value_json strings as two parallel lists (checked for alignment, else the exact per-record path is used).
    """
    global _FAST
    if _FAST is None:
        from toolkit.errors import require_extra

        require_extra("google.protobuf.message_factory", "wandb", "tracker=wandb")  # wandb's protobuf
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

        F = descriptor_pb2.FieldDescriptorProto
        proto = descriptor_pb2.FileDescriptorProto(name="sweepkit_wandb_fast.proto", package="sweepkit_wandb_fast",
                                                   syntax="proto3")

        def message(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
            msg = proto.message_type.add(name=name)
            for fname, number, ftype, label, type_name in fields:
                field = msg.field.add(name=fname, number=number, type=ftype, label=label)
                if type_name:
                    field.type_name = type_name

        rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
        message("Stream", [("history", 2, F.TYPE_BYTES, rep, ""), ("summary", 3, F.TYPE_BYTES, rep, ""),
                           ("config", 5, F.TYPE_BYTES, rep, ""), ("run", 17, F.TYPE_BYTES, rep, ""),
                           ("exit", 18, F.TYPE_BYTES, rep, "")])
        message("Step", [("num", 1, F.TYPE_INT64, opt, "")])
        message("History", [("item", 1, F.TYPE_BYTES, rep, ""), ("step", 2, F.TYPE_MESSAGE, opt, ".sweepkit_wandb_fast.Step")])
        message("Summary", [("update", 1, F.TYPE_BYTES, rep, ""), ("remove", 2, F.TYPE_BYTES, rep, "")])
        message("Items", [("key", 1, F.TYPE_STRING, rep, ""), ("nested_key", 2, F.TYPE_STRING, rep, ""),
                          ("value_json", 16, F.TYPE_STRING, rep, "")])
        pool = descriptor_pool.DescriptorPool()
        pool.Add(proto)
        _FAST = {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"sweepkit_wandb_fast.{name}"))
                 for name in ("Stream", "History", "Summary", "Items")}
    return _FAST


_FAST: dict[str, Any] | None = None


def _columns(items: bytes, n: int) -> tuple[list[str], list[str]] | None:
    """Keys and value_json texts of ``n`` concatenated item bodies, or None when they do not pair up one to one."""
    cols = _fast_types()["Items"].FromString(items)
    values = cols.value_json
    if len(values) != n:
        return None
    if not cols.key and len(cols.nested_key) == n:
        return list(cols.nested_key), list(values)
    if not cols.nested_key and len(cols.key) == n:
        return list(cols.key), list(values)
    return None


def read_run_file(path: str | Path) -> OfflineRun:
    """Parse one ``run-<id>.wandb`` file (history kept as raw bytes until read); CorruptRunFile on a bad header."""
    path = Path(path)
    payloads, problem = split_records(path.read_bytes())
    run = OfflineRun(path=path, problem=problem)
    run.run_id = path.stem[4:] if path.stem.startswith("run-") else path.stem
    Stream = _fast_types()["Stream"]
    try:
        stream = Stream.FromString(b"".join(payloads))
    except Exception:  # some record does not parse: go record by record and count the bad ones
        return _read_records(run, payloads)
    pb = _pb()
    for body in stream.run:
        _apply_run(run, pb.RunRecord.FromString(body))
    for body in stream.config:
        _apply_config(run.config, pb.ConfigRecord.FromString(body))
    _apply_summaries(run.summary_json, list(stream.summary))
    for body in stream.exit:
        run.exit_code = int(pb.RunExitRecord.FromString(body).exit_code)
    run.history_payloads = list(stream.history)
    return run


def _read_records(run: OfflineRun, payloads: list[bytes]) -> OfflineRun:
    """Exact record-by-record reading (used when some record does not parse)."""
    pb = _pb()
    bad = 0
    summaries: list[bytes] = []
    for payload in payloads:
        rec = pb.Record()
        try:
            rec.ParseFromString(payload)
        except Exception:
            bad += 1
            continue
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            run.history_payloads.append(rec.history.SerializeToString())
        elif kind == "summary":
            summaries.append(rec.summary.SerializeToString())
        elif kind == "config":
            _apply_config(run.config, rec.config)
        elif kind == "run":
            _apply_run(run, rec.run)
        elif kind == "exit":
            run.exit_code = int(rec.exit.exit_code)
    _apply_summaries(run.summary_json, summaries)
    if bad and not run.problem:
        run.problem = f"{bad} record(s) could not be parsed"
    return run


def _apply_run(run: OfflineRun, r: Any) -> None:
    """Take the run's identity, config and start time from a RunRecord."""
    for mine, theirs in (("run_id", "run_id"), ("name", "display_name"), ("project", "project"), ("entity", "entity"),
                         ("group", "run_group"), ("job_type", "job_type"), ("sweep_id", "sweep_id")):
        setattr(run, mine, getattr(r, theirs) or getattr(run, mine))
    if r.tags:
        run.tags = list(r.tags)
    if r.HasField("start_time") and r.start_time.seconds:
        run.start_time = r.start_time.seconds + r.start_time.nanos / 1e9
    if r.HasField("config"):
        _apply_config(run.config, r.config)
    if r.HasField("summary"):
        for item in r.summary.update:
            run.summary_json[_item_key(item)] = _item_json(item)


def _apply_summaries(summary: dict[str, str], bodies: list[bytes]) -> None:
    """Apply SummaryRecord bodies in order (last value of each key wins).

    Identical bodies are applied once, at their last position (same result). Runs of bodies are then read
    column-wise in one parse; a run whose items do not pair up (multi-part keys such as ``_wandb.runtime``,
    typed values, removals) is halved until the odd bodies are isolated and read exactly, keeping the order.
    """
    if not bodies:
        return
    unique = list(dict.fromkeys(reversed(bodies)))[::-1]
    start = 0
    for i, body in enumerate(unique):  # wandb's own multi-part key: read alone, in order, between bulk runs
        if _WANDB_NESTED in body:
            _apply_summary_run(summary, unique[start:i])
            _apply_summary_run(summary, unique[i:i + 1])
            start = i + 1
    _apply_summary_run(summary, unique[start:])


_WANDB_NESTED = b"\x12\x06_wandb\x12"  # nested_key "_wandb" followed by a second key part


def _apply_summary_run(summary: dict[str, str], bodies: list[bytes]) -> None:
    """Apply consecutive SummaryRecord bodies: in one column-wise parse, else halved, else item by item."""
    if not bodies:
        return
    parts = _fast_types()["Summary"].FromString(b"".join(bodies))
    updates = parts.update
    cols = None if parts.remove else _columns(b"".join(updates), len(updates))
    if cols is not None:
        summary.update(zip(*cols))
    elif len(bodies) > 1:
        half = len(bodies) // 2
        _apply_summary_run(summary, bodies[:half])
        _apply_summary_run(summary, bodies[half:])
    else:
        rec = _pb().SummaryRecord.FromString(bodies[0])
        for item in rec.update:
            summary[_item_key(item)] = _item_json(item)
        for item in rec.remove:
            summary.pop(_item_key(item), None)


def _apply_config(config: dict[str, Any], record: Any) -> None:
    for item in record.update:
        value = _json(_item_json(item), item.value_json)
        if item.key:
            config[item.key] = value
        else:
            target = config
            *parents, leaf = list(item.nested_key) or [""]
            for part in parents:
                target = target.setdefault(part, {}) if isinstance(target.get(part, {}), dict) else {}
            target[leaf] = value
    for item in record.remove:
        config.pop(_item_key(item), None)


def history_frame(run: OfflineRun, keys: Sequence[str] | None) -> pd.DataFrame:
    """Wide history of one run: ``step`` plus one float column per key (all public keys when None)."""
    wanted = set(keys) if keys else None
    bulk = _history_columns(run.history_payloads)
    if bulk is None:
        steps, rows, names, texts = _history_items(run.history_payloads, wanted)
    else:
        steps, counts, all_names, all_texts = bulk
        codes, uniques = pd.factorize(np.asarray(all_names, dtype=object))
        keep_code = np.array([(u in wanted) if wanted is not None else not str(u).startswith("_") for u in uniques],
                             dtype=bool)
        mask = keep_code[codes] if len(codes) else np.zeros(0, dtype=bool)
        rows = np.repeat(np.arange(len(steps), dtype=np.int64), counts)[mask]
        names = np.asarray(all_names, dtype=object)[mask].tolist()
        texts = np.asarray(all_texts, dtype=object)[mask].tolist()
    values = _decode_values(texts)
    numeric = _to_float(values)
    if numeric is None:  # some values are not numbers: nested dicts are expanded, media/text dropped
        rows, names, numeric = _expand_values(list(rows), names, values, wanted)
    columns = sorted(set(names)) if wanted is None else [k for k in keys or [] if k]
    index = {name: j for j, name in enumerate(columns)}
    table = np.full((len(steps), len(columns)), np.nan)
    if len(names):
        col_idx = np.fromiter((index.get(n, -1) for n in names), dtype=np.int64, count=len(names))
        row_idx = np.asarray(rows, dtype=np.int64)
        ok = col_idx >= 0
        table[row_idx[ok], col_idx[ok]] = numeric[ok]
    frame = pd.DataFrame(table, columns=columns)
    frame.insert(0, "step", np.asarray(steps, dtype=np.int64))
    if len(frame) and frame["step"].duplicated().any():  # a resumed run re-logging steps: keep the last row
        frame = frame.groupby("step", sort=True).last().reset_index()
    elif len(frame) and not frame["step"].is_monotonic_increasing:
        frame = frame.sort_values("step", kind="stable").reset_index(drop=True)
    return frame


def _history_columns(bodies: list[bytes]) -> tuple[list[int], list[int], list[str], list[str]] | None:
    """Steps, item counts, keys and value texts of HistoryRecord bodies, column-wise (None: use the exact path)."""
    History = _fast_types()["History"]
    steps, counts, items = [], [], []
    add_step, add_count, add_items = steps.append, counts.append, items.extend
    try:
        for body in bodies:
            hist = History.FromString(body)
            add_step(hist.step.num)
            add_count(len(hist.item))
            add_items(hist.item)
        cols = _columns(b"".join(items), len(items))
    except Exception:
        return None
    if cols is None:
        return None
    return steps, counts, cols[0], cols[1]


def _history_items(bodies: list[bytes], wanted: set[str] | None) -> tuple[list[int], list[int], list[str], list[str]]:
    """Exact per-item reading of HistoryRecord bodies (multi-part keys, typed values)."""
    pb = _pb()
    steps, rows, names, texts = [], [], [], []
    for body in bodies:
        try:
            hist = pb.HistoryRecord.FromString(body)
        except Exception:
            continue
        row = len(steps)
        steps.append(hist.step.num)
        for item in hist.item:
            key = _item_key(item)
            if (key in wanted) if wanted is not None else not key.startswith("_"):
                rows.append(row)
                names.append(key)
                texts.append(_item_json(item))
    return steps, rows, names, texts


def _decode_values(texts: list[str]) -> list[Any]:
    """JSON-decode many values at once (one json.loads of a joined array), falling back item by item."""
    if not texts:
        return []
    try:
        values = json.loads("[" + ",".join(texts) + "]")
        if len(values) == len(texts):
            return values
    except ValueError:
        pass
    return [_json(text, None) for text in texts]


def _json(text: str, default: Any) -> Any:
    """``text`` JSON-decoded, or ``default`` when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return default


def _to_float(values: list[Any]) -> np.ndarray | None:
    """Values as a float array, or None when some are not plain numbers."""
    try:
        arr = np.array(values, dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.ndim == 1 and len(arr) == len(values) else None


def _expand_values(rows: list[int], names: list[str], values: list[Any],
                   wanted: set[str] | None) -> tuple[list[int], list[str], np.ndarray]:
    """Slow path: expand nested dicts to dotted keys, turn non-numbers into NaN."""
    out_rows, out_names, out_vals = [], [], []
    for row, name, value in zip(rows, names, values):
        if isinstance(value, dict):
            if "_type" in value:
                continue
            for sub, v in flatten_config(value, name + ".").items():
                if (wanted is None or sub in wanted) and _number(v) is not None:
                    out_rows.append(row)
                    out_names.append(sub)
                    out_vals.append(_number(v))  # type: ignore[arg-type]
            continue
        number = _number(value)
        out_rows.append(row)
        out_names.append(name)
        out_vals.append(math.nan if number is None else number)
    return out_rows, out_names, np.asarray(out_vals, dtype=float)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (bool, int, float)) else None


def _regular(files: Iterable[Path], warnings: list[str]) -> list[Path]:
    """The regular files among ``files``; the others (a FIFO would block the read forever) are named in a warning."""
    out = []
    for file in files:
        if file.is_file():
            out.append(file)
        else:
            warnings.append(f"skipped W&B run file {file}: {path_kind(file)}, not a regular file")
    return out


def find_run_files(path: str | Path, warnings: list[str] | None = None) -> list[Path]:
    """The ``run-<id>.wandb`` files under a W&B folder, a single run folder, or a single file.

    Run folders (``offline-run-*``, ``run-*``) without a ``run-*.wandb`` file, and run files that are not regular
    files, are skipped and named in ``warnings``."""
    warnings = warnings if warnings is not None else []
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"tracker.path: '{path}' does not exist (expected a wandb/ folder, an offline-run-* folder or a .wandb file)")
    if not path.is_file() and not path.is_dir():
        raise UserError(f"tracker.path: '{path}' is {path_kind(path)}; expected a wandb/ folder, an offline-run-* folder "
                        f"or a .wandb run file")
    if path.is_file():
        if path.suffix != ".wandb":
            raise UserError(f"tracker.path: '{path}' is not a .wandb run file")
        return [path]
    direct = sorted(path.glob("run-*.wandb"))
    if direct:
        found = _regular(direct, warnings)
        if found:
            return found
        raise UserError(f"tracker.path: no readable W&B run file under '{path}' ({'; '.join(warnings)})")
    missed: list[Path] = []  # run folders without a run file, where no base had any run
    skipped: list[str] = []
    for base in (path, path / "wandb"):
        seen: set[Path] = set()
        found, notes, empty = [], [], []
        for pattern in RUN_GLOBS:
            for folder in sorted(base.glob(pattern)):
                if folder.is_symlink() or not folder.is_dir():  # latest-run is a link to a run folder
                    continue
                files = sorted(folder.glob("run-*.wandb"))
                if not files:
                    empty.append(folder)
                    continue
                for file in _regular(files, notes):
                    if file.resolve() not in seen:
                        seen.add(file.resolve())
                        found.append(file)
        if found:
            warnings.extend(notes)
            warnings.extend(f"W&B run folder {folder} has no run-*.wandb file (the run's history, config and summary "
                            f"are in it); skipped" for folder in empty)
            return found
        missed.extend(empty)
        skipped.extend(notes)
    why = (f"; {len(missed)} run folder(s) have no run-*.wandb file, e.g. {missed[0]}" if missed
           else f"; {skipped[0]}" if skipped else "")
    raise UserError(f"tracker.path: no W&B runs (offline-run-*/run-*.wandb) under '{path}'{why}")
