"""Local Dataverse and Finance and Operations Web API servers, for tests and demos.

`Sandbox(crm_seed, erp_seed)` serves the contracted entity sets of both systems over HTTP on
loopback, seeded from folders in the files-connector layout: OAuth2 client credentials,
OData queries and paging (`$select`, `$filter` with `in` and the common Dataverse query
functions, `$orderby`, `$top`, `$count`, `<set>/$count`, `$expand` of navigation properties,
Dataverse `$apply` aggregation), upserts, alternate and composite keys, `@odata.bind`
lookups, conditional requests by ETag, `CreateMultiple` / `UpdateMultiple` /
`UpsertMultiple`, `$batch` with change sets, `WhoAmI`, `EntityDefinitions` with attributes,
option sets and keys, formatted-value annotations, `$metadata`, and Dataverse change tracking
(`Prefer: odata.track-changes`, delta links with `$deletedEntity` entries, tokens that expire,
`ChangeTrackingEnabled` switchable per table: see `changetracking`), with switchable `Faults`
(throttling, 5xx, slow pages, refused records). An alternate key is unique: a seed that
holds one value twice is refused, unless the tenant is declared without that key
(`alternate_keys`; `DEMO_ALTERNATE_KEYS` for the demo company). What the sandbox does not
implement it refuses with 501 (or 400) and an OData error, never with a 200 that ignores
part of the request. `serve()` runs them until interrupted, for `p2c sandbox serve`.

Imports `model` and `connectors` (the files layout it is seeded from), `config` and `errors`;
never `stages`, `jobs` or `cli`.
"""

from p2c_etl.sandbox.faults import Faults
from p2c_etl.sandbox.seed import DEMO_ALTERNATE_KEYS
from p2c_etl.sandbox.server import Sandbox, serve

__all__ = ["DEMO_ALTERNATE_KEYS", "Faults", "Sandbox", "serve"]
