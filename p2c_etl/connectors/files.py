"""The files connector: one folder per system, one file per entity set.

`<folder>/<EntitySet>.parquet`, `.csv` (UTF-8, header row) or `.jsonl` (one OData record per
line), with columns named as the system's Web API names them. Values are typed by the
system's contracts; a value that cannot be read exactly stops with an error naming the file,
line and column. Writes keep the file's format and are atomic: the new content goes to a
temporary file in the same folder, is flushed to disk, and replaces the old file in one rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, get_args

import polars as pl
import pyarrow as pa
import pyarrow.json as pajson

from p2c_etl.casting import typed_frame
from p2c_etl.config import SystemName
from p2c_etl.connectors.base import RESULT_SCHEMA, WriteBatch
from p2c_etl.contracts import ContractSet
from p2c_etl.errors import ConnectorError
from p2c_etl.keys import record_key

FileFormat = Literal["parquet", "csv", "jsonl"]
FORMATS: tuple[FileFormat, ...] = get_args(FileFormat)


class FilesConnector:
    """Reads and writes entity sets as files in `root`."""

    def __init__(
        self,
        system: SystemName,
        root: Path,
        contracts: ContractSet,
        new_file_format: FileFormat = "parquet",
    ) -> None:
        self.system = system
        self.root = root
        self.contracts = contracts
        self.new_file_format = new_file_format
        if not root.is_dir():
            raise ConnectorError(f"{system}: folder {root} does not exist")

    def path(self, entity: str) -> Path | None:
        """The file holding `entity`, or None; two files for one entity set is an error."""
        found = [self.root / f"{entity}.{fmt}" for fmt in FORMATS]
        existing = [p for p in found if p.is_file()]
        if len(existing) > 1:
            names = ", ".join(p.name for p in existing)
            raise ConnectorError(f"{self.system}: {self.root} holds {names}; keep only one")
        return existing[0] if existing else None

    def close(self) -> None:
        """Nothing to release: every read and write opens and closes its file."""

    def pages(
        self, entity: str, columns: Sequence[str], *, missing_ok: bool = False
    ) -> Iterator[pl.DataFrame]:
        yield self.snapshot(entity, columns, missing_ok=missing_ok)

    def live_columns(self, entity: str) -> set[str] | None:
        path = self.path(entity)
        if path is None:
            return None
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
        frame = _read(path, dtypes)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ConnectorError(f"{path}: missing columns {', '.join(missing)}")
        return typed_frame(frame.select(columns), dtypes, str(path), _first_line_of(path))

    def upsert(self, entity: str, batch: WriteBatch) -> pl.DataFrame:
        contract = self.contracts.get(self.system, entity)
        path = self.path(entity) or self.root / f"{entity}.{self.new_file_format}"
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
