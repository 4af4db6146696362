"""Reference data cached per problem, input plan, trial count, timing sets, device and environment.

An RL group sends many candidates for one problem, and every evaluation used to wait for the
reference model to be built (its setup runs several forwards to validate the input sets and detect
degenerate problems: ~285 ms on an H100 with a warm process), and for it to generate each trial's
inputs and expected outputs. An entry here is what one evaluation got from its reference for its
correctness trials when its salt was the entry's own (random, 62 bits, never sent anywhere): the
setup facts (init inputs, tolerances, allowed ops, warnings, valid input sets) and, for every
counted trial ("trial0", ...), the inputs and the expected outputs. An evaluation that finds an
entry (a hit) starts its reference process as a judge: the engine hands the judge the cached inputs
and expected outputs (sealed memfds), the judge shares the inputs with the candidate as a reference
does and compares exactly as a reference does. Meanwhile, off the critical path, the same
process builds the live model in the background (with the entry's init inputs, while the candidate
sets up and compiles) and makes fresh timing inputs.

What stays fresh on a hit, from the evaluation's own secret salt: the timing inputs and the
rechecks, one per input set, after timing. That is the safety argument. Cached trial inputs repeat
across the evaluations that use one entry, and whoever submits can read a candidate's stdout in
the result, so a candidate can print them and a later submission could carry outputs precomputed
for them: it passes the cached trials and then fails a recheck, whose values nobody has seen, on
every input set. Timing inputs are never reused, so a fast path keyed on known timing inputs has
nothing to recognise. Reuse is also bounded: an entry is replaced (new salt) after `max_uses` uses
and expires after `ttl_s`. Expected outputs never enter the candidate's process, as before.

An entry is stored only when its evaluation got through its trials to the rechecks with the
reference healthy (whatever the candidate's verdict), so it holds every trial a later evaluation
with the same key asks for. Only entries up to `max_entry_bytes` are cached (default 256 MiB);
larger problems take the uncached path. Entries live in memory (LRU by bytes; the embedded
server's threads share it), or, for RQ workers, whose jobs each run in a forked work horse whose
memory dies with the job, as files in a private directory (0700, files 0600) that no sandbox mounts.
The reference's timing comes from the timing cache (`reference_cache.py`); without a cached timing
there is no hit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from triton_referee.sandbox.harness.messages import CachedTrial, Environment, ReferenceSetupReply, TrialInputsReply, decode
from triton_referee.worker import defaults

DEFAULT_MAX_ENTRY_BYTES = defaults.REFERENCE_DATA_MAX_BYTES
DEFAULT_MAX_TOTAL_BYTES = 2 << 30
DEFAULT_MAX_USES = defaults.REFERENCE_DATA_MAX_USES
DEFAULT_TTL_S = defaults.REFERENCE_DATA_TTL_S
_HEADER_LENGTH = struct.Struct(">Q")


@dataclass
class ReferenceData:
    """One cache entry. Descriptions are the harness's encoded-value descriptions; each blob holds
    the bytes its description's offsets point into."""

    salt: int
    setup: dict[str, Any]  # the reference's setup reply, less its environment
    blobs: dict[str, bytes] = field(default_factory=dict)  # "init", "LABEL.inputs", "LABEL.expected"
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> set_index, inputs, shapes, expected
    created: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def start(cls, salt: int, setup: ReferenceSetupReply, init_payload: bytes | bytearray) -> ReferenceData:
        facts = {k: v for k, v in setup.to_wire().items() if k != "environment"}
        return cls(salt=salt, setup=facts, blobs={"init": bytes(init_payload)})

    @property
    def init_bytes(self) -> bytes:
        return self.blobs["init"]

    @property
    def nbytes(self) -> int:
        return sum(len(blob) for blob in self.blobs.values())

    @property
    def complete(self) -> bool:
        """Holds trials (the engine stores an entry only once its evaluation got past all of them)."""
        return bool(self.trials)

    def add_trial(self, label: str, set_index: int, reply: TrialInputsReply, inputs: bytes, expected: bytes) -> None:
        """Keep a trial the reference recorded (`record`: the descriptions of the inputs' and the
        expected outputs' bytes, which came as sealed memfds)."""
        record = reply.record
        if record is None:
            raise ValueError(f"trial {label} was not recorded")
        self.trials[label] = {
            "set_index": set_index,
            "inputs": record.inputs,
            "shapes": reply.shapes,
            "expected": record.expected,
        }
        self.blobs[f"{label}.inputs"] = bytes(inputs)
        self.blobs[f"{label}.expected"] = bytes(expected)

    def setup_reply(self, environment: Environment) -> ReferenceSetupReply:
        """The reference's setup reply as recorded, with this evaluation's environment; decoded as
        strictly as a live reply (raises MessageError for an entry this version cannot read)."""
        facts = {k: v for k, v in self.setup.items() if k not in ("ok", "cmd", "environment")}  # "ok": older entries
        return decode(ReferenceSetupReply, {**facts, "environment": environment.to_wire()})

    def judge_request(self, label: str) -> tuple[CachedTrial, bytes, bytes]:
        """What a judge's `inputs` needs for a cached trial: the descriptions (`cached`), and the
        inputs' and the expected outputs' bytes (the engine hands them over as sealed memfds)."""
        trial = self.trials[label]
        return (
            CachedTrial(inputs=trial["inputs"], expected=trial["expected"]),
            self.blobs[f"{label}.inputs"],
            self.blobs[f"{label}.expected"],
        )


class ReferenceDataCache:
    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        max_uses: int = DEFAULT_MAX_USES,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self.max_entry_bytes = max_entry_bytes
        self.max_uses = max_uses
        self.ttl_s = ttl_s
        self.store: _MemoryStore | _DirectoryStore = (
            _MemoryStore(max_total_bytes) if directory is None else _DirectoryStore(Path(directory), max_total_bytes)
        )

    @staticmethod
    def key(
        problem_sha256: str,
        input_plan: list[dict[str, int]],
        environment: dict[str, Any],
        *,
        trials: int,
        timing_sets: int,
        device: str,
        seed: int | None,
    ) -> str:
        """`seed` is the request's fixed salt, if any (then the entry's salt is that seed)."""
        material = json.dumps(
            {
                "problem": problem_sha256,
                "input_plan": input_plan,
                "environment": environment,
                "trials": trials,
                "timing_sets": timing_sets,
                "device": device,
                "seed": seed,
            },
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def take(self, key: str) -> ReferenceData | None:
        """The entry for `key`, counting one use; None, and the entry dropped, once it has expired or
        has been used `max_uses` times (the next evaluation then stores a fresh one)."""
        try:
            found = self.store.take(key)
        except OSError:  # a cache that cannot be read is a miss, never a failed evaluation
            return None
        if found is None:
            return None
        entry, uses = found
        if uses > self.max_uses or time.time() - entry.created > self.ttl_s:
            self.store.drop(key)
            return None
        return entry

    def put(self, key: str, entry: ReferenceData) -> bool:
        if not entry.complete or entry.nbytes > self.max_entry_bytes:
            return False
        try:
            self.store.put(key, entry)
        except OSError:  # e.g. a full disk: the next evaluation misses
            return False
        return True


class _MemoryStore:
    """Entries in this process's memory, least recently used dropped first beyond `max_total_bytes`."""

    def __init__(self, max_total_bytes: int) -> None:
        self.max_total_bytes = max_total_bytes
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()  # key -> [entry, uses]
        self._lock = threading.Lock()  # the embedded server runs evaluations in threads

    def take(self, key: str) -> tuple[ReferenceData, int] | None:
        with self._lock:
            slot = self._entries.get(key)
            if slot is None:
                return None
            self._entries.move_to_end(key)
            slot[1] += 1
            return slot[0], slot[1]

    def put(self, key: str, entry: ReferenceData) -> None:
        with self._lock:
            self._entries[key] = [entry, 0]
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and sum(e.nbytes for e, _ in self._entries.values()) > self.max_total_bytes:
                self._entries.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)


class _DirectoryStore:
    """Entries as files, `KEY.entry` (a JSON header, then the blobs), for processes whose memory does
    not outlive a job. A use appends one byte to `KEY.ID.uses` (atomic with O_APPEND), so workers
    sharing the directory count together; least recently used files go first beyond `max_total_bytes`."""

    def __init__(self, directory: Path, max_total_bytes: int) -> None:
        self.directory = directory
        self.max_total_bytes = max_total_bytes
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)

    def take(self, key: str) -> tuple[ReferenceData, int] | None:
        path = self.directory / f"{key}.entry"
        try:
            entry = _load(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, struct.error):  # damaged: start again
            self.drop(key)
            return None
        fd = os.open(self.directory / f"{key}.{entry.id}.uses", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b".")
            uses = os.fstat(fd).st_size
        finally:
            os.close(fd)
        try:
            os.utime(path)
        except OSError:
            pass
        return entry, uses

    def put(self, key: str, entry: ReferenceData) -> None:
        # Written to a temporary file (mkstemp: mode 0600) and renamed, so a reader never sees half an entry.
        fd, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in _dump(entry):
                    handle.write(chunk)
        except BaseException:
            os.unlink(temporary)
            raise
        self._drop_counts(key)
        os.replace(temporary, self.directory / f"{key}.entry")
        self._prune()

    def drop(self, key: str) -> None:
        (self.directory / f"{key}.entry").unlink(missing_ok=True)
        self._drop_counts(key)

    def keys(self) -> list[str]:
        return [path.name.removesuffix(".entry") for path in self.directory.glob("*.entry")]

    def _drop_counts(self, key: str) -> None:
        for path in self.directory.glob(f"{key}.*.uses"):
            path.unlink(missing_ok=True)

    def _prune(self) -> None:
        files = []
        for path in self.directory.glob("*.entry"):
            try:
                status = path.stat()
            except FileNotFoundError:
                continue
            files.append((status.st_mtime, status.st_size, path))
        files.sort()
        total = sum(size for _, size, _ in files)
        for _, size, path in files[:-1]:
            if total <= self.max_total_bytes:
                break
            self.drop(path.name.removesuffix(".entry"))
            total -= size


def _dump(entry: ReferenceData) -> list[bytes]:
    names = sorted(entry.blobs)
    layout, offset = {}, 0
    for name in names:
        layout[name] = [offset, len(entry.blobs[name])]
        offset += len(entry.blobs[name])
    header = json.dumps(
        {
            "id": entry.id,
            "salt": entry.salt,
            "created": entry.created,
            "setup": entry.setup,
            "trials": entry.trials,
            "blobs": layout,
        }
    ).encode()
    return [_HEADER_LENGTH.pack(len(header)), header, *(entry.blobs[name] for name in names)]


def _load(data: bytes) -> ReferenceData:
    (length,) = _HEADER_LENGTH.unpack_from(data)
    header = json.loads(data[_HEADER_LENGTH.size : _HEADER_LENGTH.size + length])
    base = _HEADER_LENGTH.size + length
    blobs = {}
    for name, (offset, size) in header["blobs"].items():
        if offset < 0 or size < 0 or base + offset + size > len(data):
            raise ValueError("entry blob out of range")
        blobs[name] = data[base + offset : base + offset + size]
    if not re.fullmatch(r"[0-9a-f]{32}", str(header["id"])):
        raise ValueError("entry id malformed")
    return ReferenceData(
        salt=int(header["salt"]),
        setup=header["setup"],
        blobs=blobs,
        trials=header["trials"],
        created=float(header["created"]),
        id=str(header["id"]),
    )
