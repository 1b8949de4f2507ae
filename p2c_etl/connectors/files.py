"""The files connector: one folder per system, one file per entity set.

`<folder>/<EntitySet>.parquet`, `.csv` (UTF-8, header row) or `.jsonl` (one OData record per
line), with columns named as the system's Web API names them; or, for large entity sets, a
folder `<folder>/<EntitySet>/` of part files of one format (read in name order as one table).
Inserts into a folder go to a new part, so a migration writing a chunk at a time never
rewrites what it wrote before; an update rewrites only the parts holding its records.

Values are typed by the system's contracts; a value that cannot be read exactly stops with an
error naming the file, line and column. Writes keep the file's format and are atomic: the new
content goes to a temporary file in the same folder, is flushed to disk, and replaces the old
file in one rename.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, get_args

import polars as pl
import pyarrow as pa
import pyarrow.json as pajson

from p2c_etl.config import SystemName
from p2c_etl.connectors.base import RESULT_SCHEMA, WriteBatch
from p2c_etl.errors import ConnectorError
from p2c_etl.model.casting import typed_frame
from p2c_etl.model.contracts import ContractSet
from p2c_etl.model.keys import record_key

FileFormat = Literal["parquet", "csv", "jsonl"]
FORMATS: tuple[FileFormat, ...] = get_args(FileFormat)
Layout = Literal["file", "folder"]


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
        self, entity: str, columns: Sequence[str], *, missing_ok: bool = False
    ) -> Iterator[pl.DataFrame]:
        """The whole file as one page; a folder a part at a time."""
        path = self.path(entity)
        if path is None or path.is_file():
            yield self.snapshot(entity, columns, missing_ok=missing_ok)
            return
        dtypes = self.contracts.get(self.system, entity).dtypes(columns)
        parts = _parts(path)
        if not parts:
            yield pl.DataFrame(schema=dtypes)
        for part in parts:
            yield self._typed(part, columns, dtypes)

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
            with path.open(encoding="utf-8") as handle:
                keys = {key for line in handle if line.strip() for key in json.loads(line)}
            # An empty JSON Lines file names no columns, so it cannot have lost one.
            return keys or set(self.contracts.get(self.system, entity).columns)
        except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
            raise ConnectorError(f"{path}: cannot read: {_first_line(exc)}") from None

    def snapshot(
        self, entity: str, columns: Sequence[str], *, missing_ok: bool = False
    ) -> pl.DataFrame:
        dtypes = self.contracts.get(self.system, entity).dtypes(columns)
        path = self.path(entity)
        if path is None:
            if missing_ok:
                return pl.DataFrame(schema=dtypes)
            raise ConnectorError(
                f"{self.system}: no file for entity set {entity!r} in {self.root} "
                f"(expected {entity}.parquet, .csv or .jsonl)"
            )
        if path.is_dir():
            return pl.concat(
                [pl.DataFrame(schema=dtypes), *self.pages(entity, columns)], how="vertical"
            )
        return self._typed(path, columns, dtypes)

    def _typed(
        self, path: Path, columns: Sequence[str], dtypes: dict[str, pl.DataType]
    ) -> pl.DataFrame:
        frame = _read(path, dtypes)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ConnectorError(f"{path}: missing columns {', '.join(missing)}")
        return typed_frame(frame.select(columns), dtypes, str(path), _first_line_of(path))

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
            current = read_all(path, contract.dtypes(contract.columns))
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
        hashes = {part: self._part_hashes(part, keys, dtypes) for part in parts}
        results: list[pl.DataFrame] = []
        for update in batch.updates:
            update_keys = update.select(record_key(keys).alias("record_key"))["record_key"]
            found = pl.Series([False] * len(update_keys))
            for part in parts:
                here = self._held(part, update_keys, hashes[part], keys, dtypes)
                if not here.any():
                    continue
                found = found | here
                current = read_all(part, dtypes)
                current = current.update(
                    _conform(update.filter(here), current.schema),
                    on=keys,
                    how="left",
                    include_nulls=True,
                )
                self._keys.pop(_stamp(part), None)
                self._write(current, part)
                hashes[part] = self._part_hashes(part, keys, dtypes)
            results.append(_results(update_keys, found, "update", "no record with this key"))
        if batch.inserts.height:
            insert_keys = batch.inserts.select(record_key(keys).alias("record_key"))["record_key"]
            taken = pl.Series([False] * len(insert_keys))
            every = pl.concat([pl.Series([], dtype=pl.UInt64), *hashes.values()])
            if _hashed(insert_keys).is_in(every.implode()).any():
                for part in parts:  # rare: a key that exists, or a hash collision
                    taken = taken | self._held(part, insert_keys, hashes[part], keys, dtypes)
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
        dtypes: dict[str, pl.DataType],
    ) -> pl.Series:
        """Which of the `wanted` record keys `part` holds."""
        maybe = _hashed(wanted).is_in(hashes.implode())
        if not maybe.any():
            return maybe
        frame = self._typed(part, keys, {k: dtypes[k] for k in keys})
        held = frame.select(record_key(keys).alias("record_key"))["record_key"]
        return wanted.is_in(held.implode())

    def _part_hashes(
        self, part: Path, keys: list[str], dtypes: dict[str, pl.DataType]
    ) -> pl.Series:
        """The hashes of the record keys a part holds, read once per version of the part."""
        stamp = _stamp(part)
        if stamp not in self._keys:
            frame = self._typed(part, keys, {k: dtypes[k] for k in keys})
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


def _read(path: Path, dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path, columns=list(dtypes))
        if path.suffix == ".csv":
            return pl.read_csv(
                path,
                columns=list(dtypes),
                infer_schema=False,
                encoding="utf8-lossy",
            )
        return pl.from_arrow(_read_json(path, dtypes, "ignore"))  # type: ignore[return-value]
    except (OSError, pl.exceptions.PolarsError, pa.ArrowException) as exc:
        raise ConnectorError(f"{path}: cannot read: {_first_line(exc)}") from None


def read_all(path: Path, dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
    """The whole file, every column, so a rewrite keeps columns p2c-etl does not map."""
    try:
        if path.suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif path.suffix == ".csv":
            return pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
        else:
            frame = pl.from_arrow(_read_json(path, dtypes, "infer"))  # type: ignore[assignment]
    except (OSError, pl.exceptions.PolarsError, pa.ArrowException) as exc:
        raise ConnectorError(f"{path}: cannot read: {_first_line(exc)}") from None
    known = {c: t for c, t in dtypes.items() if c in frame.columns}
    return typed_frame(frame, known, str(path), _first_line_of(path))


def _read_json(path: Path, dtypes: dict[str, pl.DataType], unexpected: str) -> pa.Table:
    # pyarrow's JSON reader parses no dates: read them as text, `_typed` casts them exactly.
    as_read = {c: pl.String() if t.is_temporal() else t for c, t in dtypes.items()}
    schema = pl.DataFrame(schema=as_read).to_arrow().schema
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior=unexpected)
    if path.stat().st_size == 0:
        return schema.empty_table()
    return pajson.read_json(path, parse_options=options)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def write_atomic(frame: pl.DataFrame, path: Path) -> None:
    """Write `frame` beside `path`, flush it to disk, then rename it over `path`."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if path.suffix == ".parquet":
                frame.write_parquet(handle)
            elif path.suffix == ".csv":
                frame.write_csv(handle)
            else:
                frame.write_ndjson(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _first_line_of(path: Path) -> int:
    """The file line of the first record: after the header row in a CSV."""
    return 2 if path.suffix == ".csv" else 1
