"""Tracker ``hf_trainer``: the output folders of Hugging Face ``transformers.Trainer``, read into a RunSet.

A training output folder holds ``checkpoint-<N>/`` folders (each with ``trainer_state.json``, ``config.json``,
``training_args.bin``, weights, optimizer state) and, after ``trainer.save_state()``, a final ``trainer_state.json``
of its own. ``tracker.path`` is one output folder, a folder of them (searched recursively; the search stops at an
output folder), one ``checkpoint-<N>`` folder or one ``trainer_state.json`` file. Nothing of transformers is needed
to read them (the ``hf`` extra only for ``unpickle_training_args``).

Per run, the newest source is read: the final ``<output>/trainer_state.json`` when present, else the
``checkpoint-<N>/trainer_state.json`` with the largest N. A checkpoint folder without a readable trainer_state.json
(killed while saving) is passed over with a warning; with ``check_checkpoints`` (default) every older source is read
too and a warning says when one holds logged steps the newest lacks (the output folder was reused by another run?).

History: ``log_history`` (one dict per ``Trainer.log`` call: ``loss``, ``learning_rate``, ``grad_norm``, ``epoch``,
``eval_*``, ... and ``step``). Dicts at one step (a training and an evaluation log) are merged; a key given two
different values at one step keeps the newest with a warning (the same value again, as ``epoch`` is, says nothing).
The end-of-training dict (``train_runtime``, ``train_loss`` = the mean training loss, ``total_flos``, ...) goes to the
summary, not the history (``train_summary``). A dict without a whole-number step, or values that are not numbers,
are skipped or read as missing with a warning naming the file. An empty ``log_history`` is a warning naming the file
(the run is kept with no history).

Runs table: ``run_id`` and ``name`` are the output folder's path under ``tracker.path``; ``state`` is ``finished``
when the final trainer_state.json exists or ``global_step`` reached ``max_steps``, else ``running`` (a killed run
cannot be told apart); ``created_at`` is empty (the files hold no time). Config (``config.<key>``, flattened): the
model's ``config.json`` and the training arguments from ``training_args.json`` (``args.to_json_string()``), looked
for beside the source read, in the output folder, then in the newest checkpoints; ``training_args.bin`` is a pickle
and is only read with ``unpickle_training_args=true`` (a warning says when it was left unread); keys of
``trial_params`` (hyperparameter search) and the state's ``train_batch_size`` come last. Secret-looking keys
(``hub_token``) are masked. Summary: the last value of every history key, the end-of-training dict and the state's
``global_step``, ``max_steps``, ``epoch``, ``total_flos``, ``num_input_tokens_seen``, ``best_metric``,
``best_global_step``, ``best_model_checkpoint``.

Write side: ``start_run`` writes ``<path>/<name>/trainer_state.json`` (TrainerState's JSON layout, at finish) and
``training_args.json`` (the config as given) without transformers; the status is not kept (the layout has none).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from adapters.folder_runs import (FolderRunsTracker, RunRecord, float_columns, last_values,
                                  merge_steps, regular_file, relative_id)
from toolkit.errors import UserError, require_extra
from toolkit.outputs import atomic_write_text, to_jsonable
from toolkit.protocol import RunWriterBase
from toolkit.secrets import MASK, SECRET_KEY
from toolkit.runset import flatten_config
from toolkit.settings import Choice, Settings

STATE, MODEL_CONFIG, ARGS_JSON, ARGS_BIN = "trainer_state.json", "config.json", "training_args.json", "training_args.bin"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
SUMMARY_FIELDS = ("global_step", "max_steps", "epoch", "total_flos", "num_input_tokens_seen", "best_metric",
                  "best_global_step", "best_model_checkpoint")
TRAIN_SUMMARY_KEY = "train_runtime"  # only the dict Trainer logs at the end of train() has it
# TrainerState's fields and defaults (transformers 5.x ``TrainerState.save_to_json``: sorted keys, indent 2)
STATE_DEFAULTS: dict[str, Any] = {
    "best_global_step": None, "best_metric": None, "best_model_checkpoint": None, "epoch": 0, "eval_steps": 500,
    "global_step": 0, "is_hyper_param_search": False, "is_local_process_zero": True, "is_world_process_zero": True,
    "log_history": [], "logging_steps": 500, "max_steps": 0, "num_input_tokens_seen": 0, "num_train_epochs": 0,
    "save_steps": 500, "stateful_callbacks": {}, "total_flos": 0, "train_batch_size": None, "trial_name": None,
    "trial_params": None,
}


class TrainSummary(Choice):
    """Where the end-of-training dict of log_history goes."""

    summary = "summary"
    history = "history"


@dataclass
class HfTrainerSettings(Settings):
    """tracker=hf_trainer: Trainer output folders (conf/tracker/hf_trainer.yaml)."""

    path: Optional[str] = None
    unpickle_training_args: bool = False
    check_checkpoints: bool = True
    train_summary: TrainSummary = TrainSummary.summary


@dataclass
class _Source:
    """One trainer_state.json of a run, parsed."""

    path: Path
    state: dict[str, Any]


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The ``checkpoint-<N>`` folders of an output folder, largest N first."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return sorted(((int(m.group(1)), e) for e in entries if (m := CHECKPOINT.match(e.name)) and e.is_dir()),
                  reverse=True)


def _is_output_folder(folder: str, dirnames: list[str], filenames: list[str]) -> bool:
    return STATE in filenames or any(CHECKPOINT.match(d) for d in dirnames)


class HfTrainerTracker(FolderRunsTracker):
    """Hugging Face Trainer output folders (trainer_state.json, checkpoint-<N>/) read as runs."""

    name = "hf_trainer"
    settings_type = HfTrainerSettings
    what = ("a Trainer output folder (holding trainer_state.json or checkpoint-<N>/trainer_state.json), a folder of "
            "them, or a trainer_state.json file")
    run_word = f"Trainer output folders ({STATE} or checkpoint-<N>/)"

    run_file = STATE
    _is_run_folder = staticmethod(_is_output_folder)

    def _no_config_warning(self, files: list[Any]) -> str:
        return (f"{len(files)} run(s) have their training arguments only in {ARGS_BIN} (a pickle), not read: "
                f"learning rate, batch size, seed, ... are missing from config.*; set "
                f"tracker.unpickle_training_args=true for files you trust, or save args.to_json_string() as "
                f"{ARGS_JSON}; e.g. {files[0]}")

    def _sources(self, root: Path, folder: Path) -> list[Path]:
        """The run's trainer_state.json files, newest first (the final one, then checkpoints by N)."""
        if root.is_file():
            return [root]
        out = [folder / STATE] if (folder / STATE).exists() else []
        if CHECKPOINT.match(folder.name) and folder == root:
            return out  # a checkpoint folder given by itself
        return out + [ckpt / STATE for _n, ckpt in _checkpoints(folder)]

    def _parse(self, path: Path, newer: Path | None) -> _Source | None:
        """A trainer_state.json, or None with a warning naming it (the next older source is read instead)."""
        instead = f"; read {newer} instead" if newer is not None else ""
        if not path.exists():
            self.warnings.append(f"{path.parent}: no {STATE} (the checkpoint was cut off while saving?){instead}")
            return None
        if not regular_file(path):
            self.warnings.append(f"{path}: not a regular file; skipped{instead}")
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self.warnings.append(f"{path}: not valid JSON ({str(exc).splitlines()[0]}; cut off while saving?); "
                                 f"skipped{instead}")
            return None
        if not isinstance(state, dict):
            self.warnings.append(f"{path}: expected a JSON object (TrainerState), found {type(state).__name__}; "
                                 f"skipped{instead}")
            return None
        return _Source(path, state)

    def _read_run(self, root: Path, folder: Path) -> RunRecord | None:
        base = root.parent if root.is_file() else root
        run_id = relative_id(base, folder, CHECKPOINT)
        paths = self._sources(root, folder)
        chosen: _Source | None = None
        older: list[Path] = []
        for i, path in enumerate(paths):
            if chosen is None:  # a source that cannot be read names the next one that exists
                chosen = self._parse(path, next((p for p in paths[i + 1:] if p.exists()), None))
            else:
                older.append(path)
        if chosen is None:
            self.warnings.append(f"run '{run_id}': no readable {STATE} in {folder} or its checkpoints; skipped")
            return None
        record = RunRecord(run_id, run_id, folder)
        state = chosen.state
        record.history, train_summary = self._history(chosen)
        if self.settings.check_checkpoints and older:
            self._compare_older(chosen, record.history, older)
        final = chosen.path == folder / STATE and not CHECKPOINT.match(folder.name)
        global_step, max_steps = state.get("global_step"), state.get("max_steps")
        reached = (isinstance(global_step, (int, float)) and isinstance(max_steps, (int, float)) and max_steps > 0
                   and global_step >= max_steps)
        record.state = "finished" if final or reached else "running"
        record.config = self._config(run_id, folder, chosen, paths)
        record.summary = {**last_values(record.history), **train_summary,
                          **{key: state[key] for key in SUMMARY_FIELDS if state.get(key) is not None}}
        return record

    # ----------------------------------------------------------------------------------------- history
    def _history(self, source: _Source) -> tuple[pd.DataFrame, dict[str, float]]:
        """The merged history of a source's log_history, and its end-of-training values."""
        path, entries = source.path, source.state.get("log_history")
        empty = pd.DataFrame({"step": pd.Series(dtype="int64")})
        if entries is None or (isinstance(entries, list) and not entries):
            self.warnings.append(f"{path}: log_history is empty (nothing was logged before this state was saved); "
                                 f"the run is kept with no history")
            return empty, {}
        if not isinstance(entries, list):
            self.warnings.append(f"{path}: log_history is a {type(entries).__name__}, expected a list of dicts; the "
                                 f"run is kept with no history")
            return empty, {}
        dicts = [e for e in entries if isinstance(e, dict)]
        if len(dicts) < len(entries):
            self.warnings.append(f"{path}: {len(entries) - len(dicts)} log_history entr(y/ies) that are not dicts "
                                 f"skipped")
        if not dicts:
            return empty, {}
        frame = pd.DataFrame.from_records(dicts)
        frame.columns = [str(c) for c in frame.columns]
        if "step" not in frame.columns:
            self.warnings.append(f"{path}: no log_history entry has a 'step'; the run is kept with no history")
            return empty, {}
        raw = frame["step"]
        steps = pd.to_numeric(raw.where(~raw.map(lambda v: isinstance(v, bool)), None), errors="coerce")
        steps = steps.to_numpy(dtype=float, na_value=np.nan)
        ok = np.isfinite(steps) & (np.mod(steps, 1) == 0)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            self.warnings.append(f"{path}: {int((~ok).sum())} log_history entr(y/ies) without a whole-number 'step' "
                                 f"skipped, e.g. entry {i} (step {raw.iloc[i]!r})")
            frame, steps = frame.loc[ok].reset_index(drop=True), steps[ok]
        frame = frame.drop(columns=["step"])
        frame.insert(0, "step", steps.astype(np.int64))
        frame = float_columns(frame, str(path), self.warnings)
        train_summary: dict[str, float] = {}
        if self.settings.train_summary == TrainSummary.summary and TRAIN_SUMMARY_KEY in frame.columns:
            is_end = frame[TRAIN_SUMMARY_KEY].notna().to_numpy()
            if is_end.any():
                ends = frame.loc[is_end].drop(columns=["step"])
                train_summary = {k: float(v) for k, v in ends.ffill().iloc[-1].items() if pd.notna(v)}
                frame = frame.loc[~is_end].reset_index(drop=True)
                frame = frame.loc[:, frame.notna().any(axis=0).to_numpy() | (frame.columns == "step")]
        return merge_steps(frame, str(path), self.warnings), train_summary

    def _compare_older(self, chosen: _Source, history: pd.DataFrame, older: list[Path]) -> None:
        """A warning for each older trainer_state.json that holds logged steps the chosen one lacks."""
        have = set(history["step"].tolist())
        entries = chosen.state.get("log_history")
        if isinstance(entries, list):  # steps of dicts moved to the summary count as held too
            have |= {e.get("step") for e in entries if isinstance(e, dict)}
        for path in older:
            if not regular_file(path):
                self.warnings.append(f"{path.parent}: no {STATE} (the checkpoint was cut off while saving?); not "
                                     f"compared with {chosen.path}")
                continue
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                self.warnings.append(f"{path}: not valid JSON; not compared with {chosen.path}")
                continue
            entries = state.get("log_history") if isinstance(state, dict) else None
            if not isinstance(entries, list):
                continue
            steps = {e.get("step") for e in entries if isinstance(e, dict) and isinstance(e.get("step"), (int, float))}
            lacking = sorted(s for s in steps if s not in have)
            if lacking:
                self.warnings.append(
                    f"{path} holds {len(lacking)} logged step(s) that the newest source {chosen.path} lacks (e.g. "
                    f"steps {', '.join(str(int(s)) for s in lacking[:5])}); only the newest is read (the output "
                    f"folder was reused by another run, or training was resumed from an earlier checkpoint?)")

    # ----------------------------------------------------------------------------------------- config
    def _config(self, run_id: str, folder: Path, chosen: _Source, paths: Sequence[Path]) -> dict[str, Any]:
        places = list(dict.fromkeys([chosen.path.parent, folder, *(p.parent for p in paths)]))

        def first(name: str) -> Path | None:
            return next((d / name for d in places if regular_file(d / name)), None)

        model = first(MODEL_CONFIG)
        config = self._json_config(model) if model is not None else {}
        args_json, args_bin = first(ARGS_JSON), first(ARGS_BIN)
        args: dict[str, Any] = {}
        if args_json is not None:
            args = self._json_config(args_json)
        elif args_bin is not None:
            if self.settings.unpickle_training_args:
                args = self._unpickled_args(args_bin)
            else:
                self._no_config.append(args_bin)
        clash = [k for k in args if k in config and str(config[k]) != str(args[k])]
        if clash:
            self.warnings.append(f"run '{run_id}': {len(clash)} key(s) differ between {model} and the training "
                                 f"arguments; the training arguments are kept, e.g. '{clash[0]}': "
                                 f"{config[clash[0]]!r} then {args[clash[0]]!r}")
        config.update(args)
        state = chosen.state
        if isinstance(state.get("trial_params"), Mapping):
            config.update(flatten_config(state["trial_params"]))
        if state.get("trial_name") is not None:
            config["trial_name"] = state["trial_name"]
        if state.get("train_batch_size") is not None and "train_batch_size" not in config:
            config["train_batch_size"] = state["train_batch_size"]
        return config

    def _json_config(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
            self.warnings.append(f"{path}: not readable as JSON ({str(exc).splitlines()[0]}); no config read from it")
            return {}
        if not isinstance(data, dict):
            self.warnings.append(f"{path}: expected a JSON object, found {type(data).__name__}; no config read from it")
            return {}
        return flatten_config(_masked(data))

    def _unpickled_args(self, path: Path) -> dict[str, Any]:
        """``training_args.bin`` unpickled (``torch.load(weights_only=False)``: only for files you trust)."""
        torch = require_extra("torch", "hf")
        require_extra("transformers", "hf")
        try:
            args = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:  # a pickle can fail in many ways
            self.warnings.append(f"{path}: cannot be unpickled ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                 f"no training arguments read from it")
            return {}
        data = args.to_dict() if hasattr(args, "to_dict") else (vars(args) if hasattr(args, "__dict__") else None)
        if not isinstance(data, dict):
            self.warnings.append(f"{path}: unpickled a {type(args).__name__}, not TrainingArguments; no config read")
            return {}
        return flatten_config(_masked(to_jsonable(data)))

    # ----------------------------------------------------------------------------------------- write side
    def start_run(self, name: str, config: Mapping[str, Any] | None = None) -> "HfTrainerRunWriter":
        """Write a run as ``<path>/<name>/`` (trainer_state.json at finish, training_args.json)."""
        return HfTrainerRunWriter(self._write_root("outputs/"), name, config)


def _masked(config: Any) -> Any:
    """Text under secret-looking keys masked (``hub_token``); numbers stay (``pad_token_id`` is no secret)."""
    if isinstance(config, Mapping):
        return {k: MASK if isinstance(v, str) and v and SECRET_KEY.search(str(k)) else _masked(v)
                for k, v in config.items()}
    if isinstance(config, list):
        return [_masked(v) for v in config]
    return config


def state_json(log_history: list[dict[str, Any]], **fields: Any) -> str:
    """TrainerState's JSON text (``save_to_json``: every field, sorted keys, indent 2, newline)."""
    state = dict(STATE_DEFAULTS, **fields, log_history=log_history)
    return json.dumps(state, indent=2, sort_keys=True) + "\n"


class HfTrainerRunWriter(RunWriterBase):
    """One run written as a Trainer output folder: ``trainer_state.json`` (at finish) and ``training_args.json``."""

    _step_reserved = "in log_history"

    def __init__(self, root: Path, name: str, config: Mapping[str, Any] | None = None) -> None:
        self.name = str(name)
        self.dir = root / self.name
        if (self.dir / STATE).exists() or _checkpoints(self.dir):
            raise UserError(f"run '{self.name}': {self.dir} already holds a Trainer run; choose another name or folder")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._config: dict[str, Any] = {}
        self._history: list[dict[str, Any]] = []
        self._step = 0
        if config:
            self.log_config(config)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Merge ``config`` into training_args.json (written atomically)."""
        self._config.update(to_jsonable(dict(config)))
        atomic_write_text(self.dir / ARGS_JSON, json.dumps(self._config, indent=2, sort_keys=True) + "\n")

    def _write_metrics(self, values: dict[str, float], step: int) -> None:
        """One log_history entry ``{**metrics, "step": step}`` (as ``Trainer.log`` appends)."""
        self._history.append({**values, "step": step})
        self._step = max(self._step, step)

    def _close(self, status: str) -> None:
        """Write trainer_state.json (``global_step`` = ``max_steps`` = the last step; the status is not kept)."""
        atomic_write_text(self.dir / STATE, state_json(self._history, global_step=self._step, max_steps=self._step))
