"""The files connector: one folder per system, one file per entity set.

`<folder>/<EntitySet>.parquet`, `.csv` (UTF-8, header row) or `.jsonl` (one OData record per
line), with columns named as the system's Web API names them; or, for large entity sets, a
folder `<folder>/<EntitySet>/` of part files of one format (read in name order as one table).
Inserts into a folder go to a new part, so a migration writing a chunk at a time never
rewrites what it wrote before; an update rewrites only the parts holding its records.

Every read goes through the exact readers of `connectors.exports` (the migration's): values
are typed by the system's contracts, and a record that cannot be read exactly (broken CSV,
text that is not UTF-8, a value not of its column's type or that would lose digits) is a bad
row naming the file, line and column. A read given an `on_bad` sink hands it the bad rows and
goes on (a flow's source: they become rejects); without one, the first stops the read with a
ConnectorError naming them (target and reference data that cannot be read exactly stop the
flow). A column the contract needs and the file lacks is contract drift (ContractError).

Writes keep the file's format and are atomic: the new content goes to a temporary file
`.<name>.<random>.tmp` in the same folder, is flushed to disk, and replaces the old file in
one rename, keeping its permission bits (a new file is readable by its owner only). A
rewrite first reads the whole file exactly, or refuses. A temporary file that a killed write
left behind is removed when a connector next opens the folder (every run, retry, reconcile and
check opens it), and before every write to that folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

import polars as pl
import pyarrow as pa
import pyarrow.json as pajson

from p2c_etl import __version__ as p2c_version
from p2c_etl.config import SystemName
from p2c_etl.connectors.badrows import SOURCE_FILE, BadSink, unreadable
from p2c_etl.connectors.base import RESULT_SCHEMA, WriteBatch
from p2c_etl.connectors.export_csv import csv_batches, csv_header
from p2c_etl.connectors.exports import jsonl_batches, read_chunks
from p2c_etl.errors import ConfigError, ConnectorError
from p2c_etl.model.casting import typed_frame
from p2c_etl.model.contracts import Contract, ContractSet
from p2c_etl.model.keys import record_key
from p2c_etl.model.rejects import LINE

FileFormat = Literal["parquet", "csv", "jsonl"]
FORMATS: tuple[FileFormat, ...] = get_args(FileFormat)
Layout = Literal["file", "folder"]
PAGE_ROWS = 1_000_000
"""Clean records a page holds at most (a file or part larger than that is several pages)."""
NEW_FILE_MODE = 0o600
"""A file the connector creates holds personal data: readable by its owner only."""
_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")


class FilesConnector:
    """Reads and writes entity sets as files in `root`."""

    def __init__(
        self,
        system: SystemName,
        root: Path,
        contracts: ContractSet,
        new_file_format: FileFormat = "parquet",
        new_layout: Layout = "file",
    ) -> None:
        self.system = system
        self.root = root
        self.contracts = contracts
        self.new_file_format = new_file_format
        self.new_layout = new_layout
        self._keys: dict[tuple[str, int, int], pl.Series] = {}  # part → its key hashes
        if not root.is_dir():
            raise ConnectorError(f"{system}: folder {root} does not exist")
        with contextlib.suppress(OSError):  # the temporaries of killed writes: a run starts clean
            for folder in (root, *(p for p in root.iterdir() if p.is_dir())):
                remove_stale_temporaries(folder)

    def path(self, entity: str) -> Path | None:
        """The file (or folder of parts) holding `entity`, or None; two for one entity set is
        an error."""
        found = [self.root / f"{entity}.{fmt}" for fmt in FORMATS]
        existing = [p for p in found if p.is_file()]
        if (self.root / entity).is_dir():
            existing.append(self.root / entity)
        if len(existing) > 1:
            names = ", ".join(p.name for p in existing)
            raise ConnectorError(f"{self.system}: {self.root} holds {names}; keep only one")
        return existing[0] if existing else None

    def close(self) -> None:
        """Nothing to release: every read and write opens and closes its file."""

    def pages(
        self,
        entity: str,
        columns: Sequence[str],
        *,
        missing_ok: bool = False,
        on_bad: BadSink | None = None,
    ) -> Iterator[pl.DataFrame]:
        """Every clean record, a part (or `PAGE_ROWS` records) at a time; bad ones go to
        `on_bad` (SOURCE_BAD_SCHEMA rows), or without it stop the read."""
        contract = self.contracts.get(self.system, entity)
        path = self.path(entity)
        if path is None:
            if not missing_ok:
                raise ConnectorError(
                    f"{self.system}: no file for entity set {entity!r} in {self.root} "
                    f"(expected {entity}.parquet, .csv or .jsonl)"
                )
            yield pl.DataFrame(schema=contract.dtypes(columns))
            return
        files = _parts(path) if path.is_dir() else [path]
        if not files:
            yield pl.DataFrame(schema=contract.dtypes(columns))
        for file in files:
            yield from _read(file, contract, columns, on_bad)

    def content_print(self, entity: str, columns: Sequence[str]) -> str | None:
        """A digest of what a read of `columns` of `entity` would give: the bytes of its
        file (or of each part, with its name), the columns and their contract types, and the
        versions of the code that reads them. Equal prints read as the same records, so a
        mirror made from one need not be read again. None when there is no file."""
        path = self.path(entity)
        if path is None:
            return None
        contract = self.contracts.get(self.system, entity)
        digest = hashlib.sha256()
        head = [p2c_version, pl.__version__, pa.__version__, repr(contract.dtypes(columns))]
        digest.update(json.dumps(head).encode())
        try:
            for file in _parts(path) if path.is_dir() else [path]:
                digest.update(f"\n{file.name}\n{file.stat().st_size}\n".encode())
                with file.open("rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
        except OSError as exc:
            raise ConnectorError(f"{path}: cannot read: {exc}") from None
        return digest.hexdigest()

    def live_columns(self, entity: str) -> set[str] | None:
        path = self.path(entity)
        if path is None:
            return None
        if path.is_dir():
            parts = _parts(path)
            return self._columns(parts[0], entity) if parts else None
        return self._columns(path, entity)

    def _columns(self, path: Path, entity: str) -> set[str]:
        try:
            if path.suffix == ".parquet":
                return set(pl.read_parquet_schema(path))
            if path.suffix == ".csv":
                return set(pl.read_csv(path, n_rows=0, infer_schema=False).columns)
            # An empty JSON Lines file names no columns, so it cannot have lost one.
            return _jsonl_keys(path) or set(self.contracts.get(self.system, entity).columns)
        except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
            raise ConnectorError(f"{path}: cannot read: {_first_line(exc)}") from None

    def snapshot(
        self,
        entity: str,
        columns: Sequence[str],
        *,
        missing_ok: bool = False,
        on_bad: BadSink | None = None,
    ) -> pl.DataFrame:
        pages = self.pages(entity, columns, missing_ok=missing_ok, on_bad=on_bad)
        dtypes = self.contracts.get(self.system, entity).dtypes(columns)
        return pl.concat([pl.DataFrame(schema=dtypes), *pages], how="vertical")

    def upsert(self, entity: str, batch: WriteBatch) -> pl.DataFrame:
        path = self.path(entity)
        if path is None and self.new_layout == "folder":
            path = self.root / entity
            path.mkdir()
        if path is not None and path.is_dir():
            return self._upsert_parts(entity, path, batch)
        contract = self.contracts.get(self.system, entity)
        path = path or self.root / f"{entity}.{self.new_file_format}"
        if path.exists():
            dtypes = contract.dtypes(contract.columns)
            current = read_all(path, dtypes, _types(contract), _keys(contract))
        else:
            current = pl.DataFrame(schema=contract.dtypes(contract.columns))
        keys = list(batch.keys)
        present = current.select(record_key(keys).alias("record_key"))["record_key"]
        results: list[pl.DataFrame] = []
        for update in batch.updates:
            update_keys = update.select(record_key(keys).alias("record_key"))["record_key"]
            found = update_keys.is_in(present.implode())
            current = current.update(
                _conform(update.filter(found), current.schema),
                on=keys,
                how="left",
                include_nulls=True,
            )
            results.append(_results(update_keys, found, "update", "no record with this key"))
        if batch.inserts.height:
            insert_keys = batch.inserts.select(record_key(keys).alias("record_key"))["record_key"]
            new = ~insert_keys.is_in(present.implode())
            inserts = _conform(batch.inserts.filter(new), current.schema)
            current = pl.concat([current, inserts], how="diagonal_relaxed")
            results.append(_results(insert_keys, new, "insert", "a record with this key exists"))
        try:
            write_atomic(current, path)
        except OSError as exc:
            raise ConnectorError(f"{path}: cannot write: {exc}") from exc
        return pl.concat([pl.DataFrame(schema=RESULT_SCHEMA), *results], how="vertical")

    def _upsert_parts(self, entity: str, folder: Path, batch: WriteBatch) -> pl.DataFrame:
        """Updates rewrite the parts that hold their records; inserts become one new part.

        Which part holds which key is known from a 64-bit hash of each part's keys, kept in
        memory (8 bytes a record); a hash that matches is confirmed on the part's keys."""
        contract = self.contracts.get(self.system, entity)
        dtypes = contract.dtypes(contract.columns)
        keys = list(batch.keys)
        parts = _parts(folder)
        # Keep the hashes of this entity set's parts only: a migration moves on to the next.
        self._keys = {k: v for k, v in self._keys.items() if Path(k[0]).parent == folder}
        hashes = {part: self._part_hashes(part, keys, contract) for part in parts}
        results: list[pl.DataFrame] = []
        for update in batch.updates:
            update_keys = update.select(record_key(keys).alias("record_key"))["record_key"]
            found = pl.Series([False] * len(update_keys))
            for part in parts:
                here = self._held(part, update_keys, hashes[part], keys, contract)
                if not here.any():
                    continue
                found = found | here
                current = read_all(part, dtypes, _types(contract), _keys(contract))
                current = current.update(
                    _conform(update.filter(here), current.schema),
                    on=keys,
                    how="left",
                    include_nulls=True,
                )
                self._keys.pop(_stamp(part), None)
                self._write(current, part)
                hashes[part] = self._part_hashes(part, keys, contract)
            results.append(_results(update_keys, found, "update", "no record with this key"))
        if batch.inserts.height:
            insert_keys = batch.inserts.select(record_key(keys).alias("record_key"))["record_key"]
            taken = pl.Series([False] * len(insert_keys))
            every = pl.concat([pl.Series([], dtype=pl.UInt64), *hashes.values()])
            if _hashed(insert_keys).is_in(every.implode()).any():
                for part in parts:  # rare: a key that exists, or a hash collision
                    taken = taken | self._held(part, insert_keys, hashes[part], keys, contract)
            new = ~taken & ~insert_keys.is_duplicated()
            # Every part holds every column of the contract, so parts read as one table.
            full = pl.DataFrame(schema=dtypes)
            inserts = pl.concat(
                [full, _conform(batch.inserts.filter(new), full.schema)], how="diagonal_relaxed"
            )
            if inserts.height:
                suffix = parts[0].suffix if parts else f".{self.new_file_format}"
                part = _new_part(folder, suffix)
                self._write(inserts, part)
                self._keys[_stamp(part)] = _hashed(insert_keys.filter(new))
            results.append(_results(insert_keys, new, "insert", "a record with this key exists"))
        return pl.concat([pl.DataFrame(schema=RESULT_SCHEMA), *results], how="vertical")

    def _held(
        self,
        part: Path,
        wanted: pl.Series,
        hashes: pl.Series,
        keys: list[str],
        contract: Contract,
    ) -> pl.Series:
        """Which of the `wanted` record keys `part` holds."""
        maybe = _hashed(wanted).is_in(hashes.implode())
        if not maybe.any():
            return maybe
        frame = _typed(part, contract, keys)
        held = frame.select(record_key(keys).alias("record_key"))["record_key"]
        return wanted.is_in(held.implode())

    def _part_hashes(self, part: Path, keys: list[str], contract: Contract) -> pl.Series:
        """The hashes of the record keys a part holds, read once per version of the part."""
        stamp = _stamp(part)
        if stamp not in self._keys:
            frame = _typed(part, contract, keys)
            self._keys[stamp] = _hashed(frame.select(record_key(keys))[:, 0])
        return self._keys[stamp]

    def _write(self, frame: pl.DataFrame, path: Path) -> None:
        try:
            write_atomic(frame, path)
        except OSError as exc:
            raise ConnectorError(f"{path}: cannot write: {exc}") from exc


def _new_part(folder: Path, suffix: str) -> Path:
    """A part name that sorts after every earlier one and names no existing file."""
    stamp = time.time_ns()
    while True:
        part = folder / f"part-{stamp:020d}{suffix}"
        if not part.exists():
            return part
        stamp += 1


def _hashed(keys: pl.Series) -> pl.Series:
    return keys.hash(seed=0)


def _stamp(part: Path) -> tuple[str, int, int]:
    stat = part.stat()
    return str(part), stat.st_mtime_ns, stat.st_size


def _parts(folder: Path) -> list[Path]:
    """The part files of a folder, in name order (hidden files, such as unfinished writes,
    are not parts)."""
    parts = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lstrip(".") in FORMATS
    )
    if len({p.suffix for p in parts}) > 1:
        raise ConnectorError(f"{folder}: parts of more than one format; keep one")
    return parts


def _results(keys: pl.Series, ok: pl.Series, op: str, failure: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "record_key": keys,
            "op": [op] * len(keys),
            "status": pl.Series(ok).replace_strict({True: "ok", False: "failed"}),
            "message": pl.Series(ok).replace_strict(
                {True: None, False: failure}, return_dtype=pl.String
            ),
        },
        schema=RESULT_SCHEMA,
    )


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Cast `frame`'s columns to the file's types (text for CSV) so rows can be merged."""
    return frame.with_columns(
        [pl.col(c).cast(schema[c]) for c in frame.columns if c in schema and schema[c] != pl.Null]
    )


def _read(
    path: Path, contract: Contract, columns: Sequence[str], on_bad: BadSink | None
) -> Iterator[pl.DataFrame]:
    """The clean records of one file or part, a page at a time, through the exact readers."""
    try:
        for chunk in read_chunks(path, contract, columns, PAGE_ROWS):
            if chunk.bad.height:
                if on_bad is None:
                    raise ConnectorError(unreadable(path, chunk.bad))
                on_bad(chunk.bad.with_columns(pl.lit(str(path)).alias(SOURCE_FILE)))
            yield chunk.frame.drop(LINE)
    except ConfigError as exc:  # the readers' "not a file of its format"
        raise ConnectorError(str(exc)) from None
    except (OSError, pl.exceptions.PolarsError, pa.ArrowException) as exc:
        raise ConnectorError(f"{path}: cannot read: {_first_line(exc)}") from None


def _typed(path: Path, contract: Contract, columns: Sequence[str]) -> pl.DataFrame:
    """`columns` of one file or part, every record read exactly (or ConnectorError)."""
    pages = _read(path, contract, columns, None)
    return pl.concat([pl.DataFrame(schema=contract.dtypes(columns)), *pages])


def _types(contract: Contract) -> dict[str, str]:
    return {c: contract.column(c).type for c in contract.columns}


def _keys(contract: Contract) -> list[str]:
    """The key columns a record of a file that is rewritten cannot lack (a rewrite finds the
    records it updates by them)."""
    return [k for k in contract.keys if not contract.column(k).nullable]


def read_all(
    path: Path,
    dtypes: dict[str, pl.DataType],
    types: Mapping[str, str] | None = None,
    keys: Sequence[str] = (),
) -> pl.DataFrame:
    """The whole file, every column, so a rewrite keeps columns p2c-etl does not map.

    Read exactly or refused: a value that cannot be (text that is not UTF-8, a value not of
    its contract type, a number outside the contract that only a float could hold; in JSON
    Lines, a line that is not one JSON object, or one without a column of `keys`) is a
    ConnectorError naming the file, line and column, and the file is not rewritten."""
    types = types or {c: str(t) for c, t in dtypes.items()}
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif path.suffix == ".csv":
            frame = _csv_whole(path)
        else:
            frame = _jsonl_whole(path, dtypes, types, keys)
    except ConfigError as exc:
        raise ConnectorError(f"{exc}; the file is not rewritten") from None
    except (OSError, pl.exceptions.PolarsError, pa.ArrowException) as exc:
        raise ConnectorError(f"{path}: cannot read: {_first_line(exc)}") from None
    known = {c: t for c, t in dtypes.items() if c in frame.columns}
    return typed_frame(frame, known, str(path), _first_line_of(path)).drop(LINE, strict=False)


def _csv_whole(path: Path) -> pl.DataFrame:
    names, _ = csv_header(path)
    frames = [pl.DataFrame(schema={**{n: pl.String() for n in names}, LINE: pl.Int64()})]
    for frame, bad in csv_batches(path, names):
        if bad.height:
            raise ConnectorError(f"{unreadable(path, bad)}; the file is not rewritten")
        frames.append(frame)
    return pl.concat(frames)


def _jsonl_whole(
    path: Path, dtypes: dict[str, pl.DataType], types: Mapping[str, str], keys: Sequence[str]
) -> pl.DataFrame:
    # The contract's columns exactly, as a flow reads them (a key no line holds is nulls).
    batches = jsonl_batches(path, list(dtypes), dtypes, types, required=False, keys=keys)
    for _, bad in batches:
        if bad.height:
            raise ConnectorError(f"{unreadable(path, bad)}; the file is not rewritten")
    as_read = {c: pl.String() if t.is_temporal() else t for c, t in dtypes.items()}
    schema = pl.DataFrame(schema=as_read).to_arrow().schema
    data = path.read_bytes().removeprefix(_BOM)
    if not data.strip():
        return _frame(schema.empty_table())
    table = _whole_table(path, data, schema)
    try:  # the columns outside the contract are kept as they are, so they must be text too
        table.validate(full=True)
    except pa.ArrowInvalid:
        _utf8_or_refuse(path)
        raise
    # pyarrow reads text that looks like a date or a time as a timestamp, which would be
    # written back in another form ("2026-01-01" as "2026-01-01 00:00:00"): read it as text.
    as_text = pa.schema([pa.field(f.name, _as_text(f.type)) for f in table.schema])
    if not as_text.equals(table.schema):
        table = _whole_table(path, data, as_text)
    for field in table.schema:
        if field.name not in dtypes and _holds_float(field.type):
            raise ConnectorError(
                f"{path}: column {field.name}: not in the contract, and holds numbers that "
                "only a float could hold (with a fraction, or beyond 64-bit integers); a "
                "rewrite could change them, so the file is not rewritten"
            )
    return _frame(table)


def _whole_table(path: Path, data: bytes, schema: pa.Schema) -> pa.Table:
    """Every line of `data`, the columns of `schema` as it types them, any other inferred."""
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
    try:
        try:
            return pajson.read_json(pa.BufferReader(data), parse_options=options)
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc):
                raise
        # A line longer than pyarrow's parse block: the whole file as one block.
        block = pajson.ReadOptions(block_size=min(len(data) + 1, (1 << 31) - 1))
        return pajson.read_json(pa.BufferReader(data), read_options=block, parse_options=options)
    except pa.ArrowInvalid as exc:
        raise ConnectorError(_unkept(path, data, exc)) from None


def _as_text(kind: pa.DataType) -> pa.DataType:
    """`kind` with every date, time or timestamp in it (inferred from text) as text."""
    if pa.types.is_temporal(kind):
        return pa.string()
    if pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        return pa.struct([pa.field(f.name, _as_text(f.type), f.nullable) for f in fields])
    if pa.types.is_list(kind):
        return pa.list_(_as_text(kind.value_type))
    if pa.types.is_large_list(kind):
        return pa.large_list(_as_text(kind.value_type))
    return kind


class _Pairs(list[tuple[str, object]]):
    """A JSON object as the list of its (key, value) pairs: a key held twice is seen."""


class _Fraction(str):
    """A JSON number with a fraction or exponent, as written."""


def _unkept(path: Path, data: bytes, exc: pa.ArrowInvalid) -> str:
    """The one-line refusal of a file pyarrow cannot read whole: the first line that cannot be
    kept as written, and why, where one is to be found."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        why = _unkeepable(line) if line.strip(b" \t\r") else None
        if why:
            return f"{path}: line {number}: {why}; the file is not rewritten"
    detail = re.sub(r" in row \d+$", "", _first_line(exc).removeprefix("JSON parse error: "))
    return f"{path}: cannot read: {detail}; the file is not rewritten"


def _unkeepable(line: bytes) -> str | None:
    try:
        record = json.loads(
            line.decode("utf-8", "surrogateescape"), object_pairs_hook=_Pairs, parse_float=_Fraction
        )
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(record, _Pairs):
        return "not a JSON object"
    twice = _twice(record)
    if twice:
        return f"column {twice}: appears twice in one object"
    for name, value in record:
        why = _unkept_value(name) or _unkept_value(value)
        if why:
            return f"column {name}: {why}"
    return None


def _twice(pairs: _Pairs) -> str | None:
    names = [name for name, _ in pairs]
    return next((name for name in names if names.count(name) > 1), None)


def _unkept_value(value: object) -> str | None:
    """Why pyarrow cannot read a JSON value, or None."""
    if isinstance(value, _Fraction):
        return f"{value} is too large for any number type" if math.isinf(float(value)) else None
    if isinstance(value, str):
        lone = _SURROGATE.search(value)
        if lone is None:
            return None
        if 0xDC80 <= ord(lone.group()) <= 0xDCFF:  # a byte that is not UTF-8, decoded
            return "the line is not UTF-8 text"
        return f"holds \\u{ord(lone.group()):04x}, a lone surrogate escape: no character"
    if isinstance(value, _Pairs):
        twice = _twice(value)
        if twice:
            return f"{twice} appears twice in one object"
        return next(
            (why for name, v in value if (why := _unkept_value(name) or _unkept_value(v))), None
        )
    if isinstance(value, list):
        return next((why for v in value if (why := _unkept_value(v))), None)
    return None


def _holds_float(kind: pa.DataType) -> bool:
    if pa.types.is_floating(kind):
        return True
    if pa.types.is_struct(kind):
        return any(_holds_float(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _holds_float(kind.value_type)
    return False


def _utf8_or_refuse(path: Path) -> None:
    line = 1
    with path.open("rb") as handle:
        carry = b""
        while data := handle.read(1 << 24):
            data = carry + data
            end = data.rfind(b"\n") + 1 or len(data)
            block, carry = data[:end], data[end:]
            try:
                block.decode("utf-8")
            except UnicodeDecodeError as exc:
                at = line + block[: exc.start].count(b"\n")
                raise ConnectorError(
                    f"{path}: line {at}: the line is not UTF-8 text; the file is not rewritten"
                ) from None
            line += block.count(b"\n")
        try:
            carry.decode("utf-8")
        except UnicodeDecodeError:
            raise ConnectorError(
                f"{path}: line {line}: the line is not UTF-8 text; the file is not rewritten"
            ) from None


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def write_atomic(frame: pl.DataFrame, path: Path) -> None:
    """Write `frame` beside `path`, flush it to disk, then rename it over `path`.

    The file keeps its permission bits (a new one: NEW_FILE_MODE). The temporary file is
    locked while it is written, so that `remove_stale_temporaries`, run first, removes only
    those a killed write left behind."""
    remove_stale_temporaries(path.parent)
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else NEW_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            if path.suffix == ".parquet":
                frame.write_parquet(handle)
            elif path.suffix == ".csv":
                frame.write_csv(handle)
            else:
                frame.write_ndjson(handle)
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp, path)  # before the lock goes with the handle
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files (`.<name>.<random>.tmp`) of writes that were killed: those
    no live write holds locked. Returns what was removed."""
    removed = []
    for entry in folder.iterdir():
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp")) or not entry.is_file():
            continue
        if not any(f".{fmt}." in name for fmt in FORMATS):
            continue
        with contextlib.suppress(OSError), entry.open("rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a write in progress
            entry.unlink()
            removed.append(entry)
    return removed


def _jsonl_keys(path: Path) -> set[str]:
    """The keys the JSON objects of a JSON Lines file hold. A line that is not one (not JSON,
    not UTF-8, not an object) is a bad record of a read, not a sign of drift: it names none."""
    keys: set[str] = set()
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.removeprefix(_BOM) if number == 1 else line
            if not text.strip():
                continue
            try:
                record = json.loads(text.decode("utf-8", "surrogateescape"))
            except ValueError:
                continue
            if isinstance(record, dict):
                keys.update(record)
    return keys


def _first_line_of(path: Path) -> int:
    """The file line of the first record: after the header row in a CSV."""
    return 2 if path.suffix == ".csv" else 1
