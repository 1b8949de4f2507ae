"""Which query options a request may carry; every other one is refused, never ignored.

Each resource names the options it honours (`COLLECTION`, `ENTITY`, `COUNT`, ...). An option
the OData standard or the service documents but the sandbox does not implement (`$apply`
beyond what `aggregate` serves, `$search`, `$compute`, `fetchXml=`, `sql=`, saved queries,
parameter aliases) is a 501 with an OData error; an option the resource does not take, or a
name neither service knows, is a 400. `$format` is honoured for JSON only.
"""

from __future__ import annotations

from p2c_etl.sandbox.protocol import BAD_QUERY, ApiRequest, ODataError, not_implemented

COLLECTION = frozenset(
    {"$select", "$filter", "$top", "$skip", "$orderby", "$count", "$skiptoken", "$expand"}
)
ENTITY = frozenset({"$select", "$expand"})
COUNT = frozenset({"$filter"})
WRITE = frozenset({"$select", "$expand"})
NONE: frozenset[str] = frozenset()

_UNIMPLEMENTED = {
    "$search": "$search (Dataverse search)",
    "$compute": "$compute",
    "$index": "$index",
    "$levels": "$levels",
    "$schemaversion": "$schemaversion",
    "$deltatoken": "$deltatoken on this resource (a delta link reads an entity set)",
    "$apply": "$apply",
    "fetchXml": "A FetchXML query (fetchXml=)",
    "sql": "A Dataverse SQL query (sql=)",
    "savedQuery": "A saved view query (savedQuery=)",
    "userQuery": "A personal view query (userQuery=)",
}
_JSON_FORMATS = ("json", "application/json")


def check_options(req: ApiRequest, allowed: frozenset[str], custom: frozenset[str] = NONE) -> None:
    """Refuse every query option of `req` that is not in `allowed` (or a `custom` one)."""
    for name in req.query:
        if name in allowed or name in custom:
            continue
        if name == "$format":
            _check_format(req.query[name])
        elif name in _UNIMPLEMENTED:
            raise not_implemented(_UNIMPLEMENTED[name])
        elif name.startswith("@"):
            raise not_implemented(f"The parameter alias {name}")
        elif name.startswith("$"):
            raise ODataError(
                400, f"The query option {name} is not supported on this resource.", BAD_QUERY
            )
        else:
            raise ODataError(400, f"The query parameter '{name}' is not supported.", BAD_QUERY)


def _check_format(value: str) -> None:
    kind = value.split(";", 1)[0].strip().lower()
    if kind not in _JSON_FORMATS:
        raise ODataError(400, f"The $format '{value}' is not supported; use json.", BAD_QUERY)
