"""Resource paths below a service root and their key predicates.

accounts                                         a collection
accounts(<guid>), accounts(accountnumber='A-1')  one record
CustomersV2(dataAreaId='usmf',CustomerAccount='O''Brien')
accounts/Microsoft.Dynamics.CRM.UpsertMultiple   an action on a collection
EntityDefinitions(LogicalName='account')/Attributes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from p2c_etl.sandbox.literals import tokenize
from p2c_etl.sandbox.protocol import BAD_QUERY, ODataError


@dataclass(frozen=True)
class KeySpec:
    """A key predicate: one unnamed value (`(<guid>)`) or named values (`(a='x',b=2)`)."""

    single: Any = None
    named: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resource:
    name: str
    key: KeySpec | None
    rest: str


def split_resource(path: str) -> Resource:
    """`name`, the key in parentheses (if any) and what follows the next `/`."""
    paren, slash = path.find("("), path.find("/")
    cut = min(paren if paren >= 0 else len(path), slash if slash >= 0 else len(path))
    name = path[:cut]
    if cut == len(path) or path[cut] == "/":
        return Resource(name, None, path[cut + 1 :])
    end = _closing(path, cut)
    tail = path[end + 1 :]
    if tail and not tail.startswith("/"):
        raise ODataError(400, f"Bad resource path {path!r}", BAD_QUERY)
    return Resource(name, parse_key(path[cut + 1 : end]), tail[1:])


def _closing(path: str, start: int) -> int:
    quoted = False
    for index in range(start + 1, len(path)):
        char = path[index]
        if char == "'":
            quoted = not quoted
        elif char == ")" and not quoted:
            return index
    raise ODataError(400, f"Unbalanced parentheses in {path!r}", BAD_QUERY)


def parse_key(raw: str) -> KeySpec:
    tokens = tokenize(raw)
    if len(tokens) == 1 and tokens[0].kind == "literal":
        return KeySpec(single=tokens[0].value)
    named: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        part = tokens[index : index + 3]
        shape = [t.kind for t in part] == ["name", "punct", "literal"]
        if not shape or part[1].value != "=" or part[0].value in named:
            raise ODataError(400, f"Bad key predicate ({raw})", BAD_QUERY)
        named[part[0].value] = part[2].value
        index += 3
        if index < len(tokens):
            if tokens[index].value != "," or tokens[index].kind != "punct":
                raise ODataError(400, f"Bad key predicate ({raw})", BAD_QUERY)
            index += 1
    if not named:
        raise ODataError(400, "Empty key predicate ()", BAD_QUERY)
    return KeySpec(named=named)


def relative_path(url: str, root: str) -> tuple[str, str]:
    """The decoded path below `root` and the raw query of an absolute URL, a path from the
    server's `/`, a path from the service root (`/accounts(...)`, as `@odata.bind` writes it)
    or a relative path."""
    base = urlsplit(root).path
    parts = urlsplit(url)
    path = parts.path
    if not parts.scheme and not path.startswith(base):
        path = base + path.removeprefix("/")
    if not path.startswith(base):
        raise ODataError(400, f"{url!r} is not below the service root {root}", BAD_QUERY)
    return unquote(path[len(base) :]), parts.query


def endpoint_key(method: str, path: str) -> str:
    """How a request is counted in the stats: `GET accounts`, `PATCH CustomersV2`,
    `POST accounts/UpsertMultiple`, `GET EntityDefinitions/Attributes`."""
    try:
        resource = split_resource(path)
    except ODataError:
        return f"{method} {path}"
    action = resource.rest.split("(", 1)[0].rsplit(".", 1)[-1]
    name = resource.name or "/"
    return f"{method} {name}/{action}" if action else f"{method} {name}"
