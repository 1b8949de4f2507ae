"""Contracts: what an entity set of a system *is* (columns, types, lengths, keys, codes).

One TOML file per entity set, `contracts/<system>/<EntitySet>.toml`:

    entity = "CustomersV2"
    system = "erp"
    keys = ["dataAreaId", "CustomerAccount"]
    primary_id = "accountid"          # optional: the GUID column of a Dataverse table
    modified = "ModifiedDateTime"     # optional: a column the system sets at every write

    [columns]
    CustomerAccount = { type = "string", max_length = 20, nullable = false }
    CreditLimit = { type = "decimal(28,6)" }
    PartyType = { type = "string", allowed = ["Organization", "Person"] }
    SalesMemo = { type = "string", max_length = 1_073_741_823, multiline = true }

Types: string, guid, int, bool, date, datetime, decimal(P,S). `int` is a 32-bit integer,
-2147483648 to 2147483647 (`INT_RANGE`): Finance and Operations `Edm.Int32`, Dataverse
`Integer`, and the picklist, state and status codes, which are 32-bit too; every integer
column P2C maps is one of these (a value outside the range is an `out_of_range` reject; its
`allowed` values, if any, must lie inside). Every text column is bounded,
by `max_length` (in UTF-16 code units, as Dataverse and SQL Server count) or by its `allowed`
values. Text never holds a control character (C0 but TAB, LF and CR; DEL; C1) or a bidi
control (`REFUSED_CHARACTERS`); a column is single-line unless marked `multiline = true`, and a
single-line column holds no TAB, LF, CR or Unicode line separator (`LINE_BREAKS`) and no
zero-width space, word joiner or byte order mark (`INVISIBLE`) either. A key holds only what
one can see and type: none of `KEY_INVISIBLE` (non-ASCII spaces such as NBSP, zero-width
joiners, soft hyphens) and no leading space (a trailing one is ignored by both systems, as SQL
Server compares text, and so by the key matching of `stages.compare`).

A Dataverse lookup column names the entity sets it points to: `_transactioncurrencyid_value =
{ type = "guid", bind = "transactioncurrencies" }`, `_customerid_value = { type = "guid", bind =
["accounts", "contacts"] }`. How a contract is *checked* lives in `p2c_etl.stages.validate`;
this module only reads contracts and builds schemas.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.api.polars.types import PolarsData

from p2c_etl.errors import ContractError

GUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
_SIMPLE_TYPES: Mapping[str, pl.DataType] = MappingProxyType(
    {
        "string": pl.String(),
        "guid": pl.String(),
        "int": pl.Int64(),
        "bool": pl.Boolean(),
        "date": pl.Date(),
        "datetime": pl.Datetime("us", "UTC"),
    }
)
_COLUMN_KEYS = {"type", "nullable", "max_length", "allowed", "bind", "multiline"}


CodePoints = tuple[tuple[int, int], ...]
"""Inclusive ranges of code points."""
REFUSED_CHARACTERS: CodePoints = (
    (0x00, 0x08),  # C0 controls but TAB, LF, CR: NUL, ESC, ... (neither Web API takes NUL)
    (0x0B, 0x0C),
    (0x0E, 0x1F),
    (0x7F, 0x9F),  # DEL and the C1 controls
    (0x061C, 0x061C),  # ARABIC LETTER MARK
    (0x200E, 0x200F),  # LEFT-TO-RIGHT / RIGHT-TO-LEFT MARK
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2066, 0x2069),  # bidi isolates
)
"""Characters no text column holds: invisible, they make a key no one can find by typing."""
LINE_BREAKS: CodePoints = ((0x09, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029))
"""TAB, LF, CR, LINE and PARAGRAPH SEPARATOR: refused in single-line columns (and keys)."""
INVISIBLE: CodePoints = ((0x200B, 0x200B), (0x2060, 0x2060), (0xFEFF, 0xFEFF))
"""ZERO WIDTH SPACE, WORD JOINER, ZERO WIDTH NO-BREAK SPACE (the BOM): refused in single-line
columns; in a name they only ever come from a paste. (ZWNJ and ZWJ, U+200C/D, are kept in
names: Persian, the Indic scripts and emoji sequences need them.)"""
KEY_INVISIBLE: CodePoints = (
    (0x00A0, 0x00A0),  # NO-BREAK SPACE (legitimate in a name, never in a key)
    (0x00AD, 0x00AD),  # SOFT HYPHEN
    (0x1680, 0x1680),  # OGHAM SPACE MARK
    (0x180E, 0x180E),  # MONGOLIAN VOWEL SEPARATOR
    (0x2000, 0x200D),  # EN QUAD ... HAIR SPACE, ZERO WIDTH SPACE, ZWNJ, ZWJ
    (0x202F, 0x202F),  # NARROW NO-BREAK SPACE
    (0x205F, 0x2064),  # MEDIUM MATHEMATICAL SPACE, WORD JOINER, invisible operators
    (0x3000, 0x3000),  # IDEOGRAPHIC SPACE
    (0xFEFF, 0xFEFF),  # ZERO WIDTH NO-BREAK SPACE (BOM)
)
"""Refused in keys: characters that look like nothing or like an ASCII space, so that a key
holding one is a second record beside the one everybody types."""
INT_RANGE = (-(2**31), 2**31 - 1)
"""What an `int` column holds: a 32-bit integer (Edm.Int32; Dataverse Integer, picklists)."""
_ASTRAL: CodePoints = ((0x10000, 0x10FFFF),)


def character_class(ranges: Iterable[tuple[int, int]]) -> str:
    """A regex character class of `ranges`, in the syntax of polars (Rust regex)."""
    return "[" + "".join(f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ranges) + "]"


def python_character_class(ranges: Iterable[tuple[int, int]]) -> re.Pattern[str]:
    """`character_class` for Python's `re`."""
    return re.compile("[" + "".join(f"\\U{lo:08X}-\\U{hi:08X}" for lo, hi in ranges) + "]")


def utf16_length(column: pl.Expr) -> pl.Expr:
    """The length of text as Dataverse and SQL Server count it: in UTF-16 code units (a
    character beyond U+FFFF, such as most emoji, counts twice)."""
    return column.str.len_chars() + column.str.count_matches(character_class(_ASTRAL))


@dataclass(frozen=True)
class ColumnSpec:
    """One column of an entity set."""

    name: str
    type: str
    dtype: pl.DataType
    nullable: bool = True
    max_length: int | None = None
    allowed: tuple[Any, ...] | None = None
    bind: tuple[str, ...] = ()
    """For a Dataverse lookup column (`_x_value`): the entity sets it may point to; written
    as `x@odata.bind` (one set) or `x_<logicalname>@odata.bind` (several: polymorphic)."""
    multiline: bool = False
    """Text that may hold line breaks and tabs (a memo, a description, a street)."""

    @property
    def is_free_text(self) -> bool:
        """A text column whose values are not a closed list (`allowed`) or a GUID."""
        return self.type == "string" and self.allowed is None


@dataclass(frozen=True)
class Contract:
    """An entity set of one system, as read from its contract file."""

    system: str
    entity: str
    keys: tuple[str, ...]
    columns: Mapping[str, ColumnSpec]
    source: Path
    primary_id: str | None = None
    modified: str | None = None
    """A datetime column the system itself sets to the time of every write of the record
    (an F&O entity extended with one): runs read only the records at or after their last
    high-water mark (`connectors.finops`). Standard F&O entities have none (reference 5.4)."""

    def column(self, name: str) -> ColumnSpec:
        try:
            return self.columns[name]
        except KeyError:
            raise ContractError(
                f"{self.source}: {self.system} {self.entity} has no column {name!r}"
            ) from None

    def dtypes(self, names: Iterable[str]) -> dict[str, pl.DataType]:
        """The polars types of `names`, in that order."""
        return {name: self.column(name).dtype for name in names}

    def pandera_schema(self, names: Sequence[str]) -> pa.DataFrameSchema:
        """A pandera.polars schema over `names` (keys must be among them)."""
        missing = [key for key in self.keys if key not in names]
        if missing:
            raise ContractError(f"{self.source}: key columns {missing} are not mapped")
        return pa.DataFrameSchema(
            {name: _pandera_column(self.column(name), name in self.keys) for name in names},
            unique=list(self.keys),
            report_duplicates="all",
            name=f"{self.system}.{self.entity}",
        )


def refused_characters(spec: ColumnSpec, key: bool) -> CodePoints:
    """The characters a text column refuses: a key refuses the most, a memo the least."""
    if spec.multiline:
        return REFUSED_CHARACTERS
    return REFUSED_CHARACTERS + LINE_BREAKS + (KEY_INVISIBLE if key else INVISIBLE)


def _pandera_column(spec: ColumnSpec, key: bool = False) -> pa.Column:
    checks: list[pa.Check] = []
    if spec.max_length is not None:
        checks.append(_longest(spec.max_length))
    if spec.is_free_text:
        checks.append(_none_of(refused_characters(spec, key), leading_space=key))
    if spec.type == "int" and spec.allowed is None:  # the allowed values are in range
        checks.append(pa.Check.in_range(*INT_RANGE))
    if spec.allowed is not None:
        checks.append(pa.Check.isin(list(spec.allowed)))
    if spec.type == "guid":
        checks.append(pa.Check.str_matches(GUID_PATTERN))
    return pa.Column(spec.dtype, checks=checks, nullable=spec.nullable)


def _longest(limit: int) -> pa.Check:
    def check(data: PolarsData) -> pl.LazyFrame:
        text = data.lazyframe.select(pl.col(data.key)).collect().to_series()
        fits = text.str.len_bytes() <= limit  # never fewer bytes than UTF-16 code units
        unsure = ~fits.fill_null(True)
        if unsure.any():  # count exactly only what the bytes cannot settle
            counted = text.filter(unsure).to_frame().select(utf16_length(pl.col(data.key)))
            fits = fits.scatter(unsure.arg_true(), counted.to_series() <= limit)
        return fits.to_frame(data.key).lazy()

    return pa.Check(check, name="str_length")


def _none_of(ranges: CodePoints, leading_space: bool = False) -> pa.Check:
    pattern = character_class(ranges) + ("|^ " if leading_space else "")

    def check(data: PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(~pl.col(data.key).str.contains(pattern))

    return pa.Check(check, name="text_characters")


def parse_type(text: str) -> pl.DataType:
    """`"decimal(19,4)"` → `pl.Decimal(19, 4)`; raises ValueError for unknown types."""
    if text in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[text]
    match = _DECIMAL.match(text)
    if match and 0 < int(match[1]) <= 38 and int(match[2]) <= int(match[1]):
        return pl.Decimal(int(match[1]), int(match[2]))
    raise ValueError(
        f"unknown type {text!r} (string, guid, int, bool, date, datetime, decimal(P,S))"
    )


def load_contract(path: Path) -> Contract:
    """Read one contract file; every problem is a ContractError naming the file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ContractError(f"{path}: cannot read contract: {exc}") from None
    try:
        columns = {name: _column(name, spec) for name, spec in raw["columns"].items()}
        contract = Contract(
            system=str(raw["system"]),
            entity=str(raw["entity"]),
            keys=tuple(raw["keys"]),
            columns=MappingProxyType(columns),
            source=path,
            primary_id=raw.get("primary_id"),
            modified=raw.get("modified"),
        )
    except KeyError as exc:
        raise ContractError(f"{path}: missing {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:
        raise ContractError(f"{path}: {exc}") from None
    for name in (*contract.keys, *([contract.primary_id] if contract.primary_id else [])):
        contract.column(name)
    if contract.modified is not None:
        if contract.modified in contract.keys:
            raise ContractError(f"{path}: 'modified' column {contract.modified!r} cannot be a key")
        if contract.column(contract.modified).type != "datetime":
            raise ContractError(
                f"{path}: 'modified' column {contract.modified!r} must be a datetime"
            )
    multiline_keys = [k for k in contract.keys if contract.column(k).multiline]
    if multiline_keys:
        raise ContractError(f"{path}: key columns {multiline_keys} cannot be multiline")
    return contract


def _column(name: str, spec: Mapping[str, Any]) -> ColumnSpec:
    unknown = set(spec) - _COLUMN_KEYS
    if unknown:
        raise ValueError(f"column {name!r}: unknown keys {sorted(unknown)}")
    allowed = spec.get("allowed")
    bind = spec.get("bind", ())
    max_length = spec.get("max_length")
    if max_length is not None and (type(max_length) is not int or max_length < 1):
        raise ValueError(f"column {name!r}: max_length must be a whole number above 0")
    multiline = spec.get("multiline", False)
    if type(multiline) is not bool or (multiline and spec["type"] != "string"):
        raise ValueError(f"column {name!r}: multiline is true or false, on text columns only")
    lowest, highest = INT_RANGE
    if spec["type"] == "int" and any(
        type(v) is not int or not lowest <= v <= highest for v in allowed or ()
    ):
        raise ValueError(f"column {name!r}: allowed values of an int are 32-bit whole numbers")
    return ColumnSpec(
        name=name,
        type=spec["type"],
        dtype=parse_type(spec["type"]),
        nullable=bool(spec.get("nullable", True)),
        max_length=max_length,
        allowed=tuple(allowed) if allowed is not None else None,
        bind=(bind,) if isinstance(bind, str) else tuple(bind),
        multiline=multiline,
    )


class ContractSet:
    """Every contract under a folder, by (system, entity set)."""

    def __init__(self, contracts: Iterable[Contract]) -> None:
        self._by_key = {(c.system, c.entity): c for c in contracts}

    @classmethod
    def load(cls, folder: Path) -> ContractSet:
        return cls(load_contract(path) for path in sorted(folder.glob("*/*.toml")))

    def get(self, system: str, entity: str) -> Contract:
        try:
            return self._by_key[(system, entity)]
        except KeyError:
            raise ContractError(f"no contract for {system} entity set {entity!r}") from None

    def __iter__(self) -> Any:
        return iter(self._by_key.values())
