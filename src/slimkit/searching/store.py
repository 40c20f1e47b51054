"""The search's store: Optuna's RDB storage in an embedded SQLite file, `DIR/search.db`.

Each trial's record (passes and configs, artifact path, measurements, error, duration) is written as a user
attribute in the same transaction Optuna finishes the trial with, the moment it ends, so a `kill -9` loses at
most the trial that was running. The study's own attributes say what the store is (store version, the model
and data fingerprint, the floor, the objective), so `--resume` can refuse a store it cannot continue.
"""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path
from typing import Any

from slimkit.errors import SlimkitError

STORE_FILE = "search.db"
STORE_VERSION = 1
STUDY_NAME = "slimkit-search"
RECORD = "record"  # the trial user attribute holding slimkit's record of the trial


def import_optuna():
    try:
        import optuna
    except ImportError as exc:
        raise SlimkitError("slimkit search needs Optuna", "pip install 'slimkit[search]'") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The group-wise multivariate TPE is marked experimental; the search chose it knowingly.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def store_path(folder: Path) -> Path:
    return Path(folder) / STORE_FILE


def _check_sqlite(path: Path) -> None:
    """A file that is not an SQLite database (or not Optuna's) gets one clear line, not a SQLAlchemy trace."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise SlimkitError(f"{path} is not a search store (not an SQLite database: {exc})",
                           "give an -o folder of its own to a new search") from None
    if "studies" not in tables or "trials" not in tables:
        raise SlimkitError(f"{path} is an SQLite file but not a slimkit search store",
                           "give an -o folder of its own to a new search") from None


def open_store(folder: Path, *, create: bool):
    """The study in `folder` (new when `create`; an existing one must be there otherwise)."""
    optuna = import_optuna()
    path = store_path(folder)
    if not create:
        if not path.is_file():
            raise SlimkitError(f"{folder} holds no search store ({STORE_FILE})",
                               "point at the -o folder of a search (a search without --resume creates it)")
        _check_sqlite(path)
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}", skip_compatibility_check=False)
    except Exception as exc:  # an Optuna schema from another version, a locked or corrupt file
        raise SlimkitError(f"cannot open the search store {path}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}",
                           "use the slimkit/Optuna versions that wrote it, or a new -o folder") from None
    return storage


def check_compatible(attrs: dict[str, Any], expected: dict[str, Any], folder: Path) -> None:
    """Refuse to continue a store written by another store version, for another model or data, or with
    another floor or objective: its trials would not be comparable."""
    version = attrs.get("store_version")
    if version != STORE_VERSION:
        raise SlimkitError(f"the search store in {folder} has store version {version!r}, this slimkit writes "
                           f"{STORE_VERSION}", "start a new search in another -o folder (nothing was changed)")
    for key, what in (("fingerprint", "model or data"), ("floor", "floor"), ("objective", "objective"),
                      ("runtimes", "runtimes"), ("settings", "measurement settings")):
        if attrs.get(key) != expected.get(key):
            raise SlimkitError(f"the search in {folder} was made for another {what} ({attrs.get(key)!r}, now "
                               f"{expected.get(key)!r})",
                               "resume it with the same model, data and options, or start a new -o folder "
                               "(nothing was changed)")


def trial_record(frozen: Any) -> dict[str, Any]:
    """slimkit's record of a finished (or interrupted) Optuna trial, with its number and state."""
    record = dict(frozen.user_attrs.get(RECORD) or {})
    record.setdefault("number", frozen.number)
    record["optuna_state"] = frozen.state.name
    record.setdefault("params", dict(frozen.params))
    return record


def all_records(study: Any) -> list[dict[str, Any]]:
    """The records of every trial that started (queued ones that never ran are left out)."""
    return [trial_record(t) for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]
