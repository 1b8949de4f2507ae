"""The value maps the Prospect to cash templates ship with (reference section 3)."""

from __future__ import annotations

import pycountry

from p2c_etl.model.flow import ValueMap

# Spellings users type that ISO 3166 does not list as a name.
_COUNTRY_ALIASES = {
    "u.s.": "USA",
    "u.s.a.": "USA",
    "america": "USA",
    "uk": "GBR",
    "u.k.": "GBR",
    "great britain": "GBR",
    "england": "GBR",
    "holland": "NLD",
}


def _country_entries() -> dict[str, str]:
    """Country names, official and common names, ISO alpha-2 and alpha-3 → ISO alpha-3."""
    entries: dict[str, str] = {}
    for country in pycountry.countries:
        for attr in ("name", "official_name", "common_name", "alpha_2", "alpha_3"):
            value = getattr(country, attr, None)
            if value:
                entries[value] = country.alpha_3
    entries.update(_COUNTRY_ALIASES)
    return entries


_COUNTRIES = _country_entries()

COUNTRY_TO_ISO3 = ValueMap("country → ISO alpha-3", _COUNTRIES)
"""Any spelling of a country → the ISO 3166 alpha-3 code F&O's `…CountryRegionISOCode` holds."""

COUNTRY_TO_ISO3_BLANK_USA = ValueMap(
    "country → ISO alpha-3, blank → USA", {**_COUNTRIES, "": "USA"}
)
"""As `COUNTRY_TO_ISO3`, and an empty country becomes `USA` (the via-CDS template default)."""

FNO_UNIT_TO_SALES_UNIT = ValueMap(
    "F&O unit symbol → Sales unit name",
    {
        "ea": "Each",
        "pcs": "Piece",
        "box": "Box",
        "dz": "Dozen",
        "hr": "Hour",
        "h": "Hour",
        "kg": "Kilogram",
        "m": "Meter",
        "set": "Set",
    },
)
"""The template's unit map was never published; these are USMF's sales units."""

FNO_PRODUCT_TYPE_TO_SALES = ValueMap(
    "F&O product type → producttypecode", {"Item": "1", "Service": "3"}
)
"""`EcoResProductType` → Sales `producttypecode` (1 Sales Inventory, 3 Services)."""

FNO_NOYES_TO_BOOL = ValueMap("F&O NoYes → boolean", {"Yes": "true", "No": "false"})
"""F&O's `NoYes` enum (`"Yes"` / `"No"` in OData JSON) → a Dataverse two-option column."""

SALES_UNIT_TO_FNO_UNIT = ValueMap(
    "Sales unit name → F&O unit symbol",
    {name: symbol for symbol, name in FNO_UNIT_TO_SALES_UNIT.entries.items() if symbol != "h"},
)
"""The reverse of `FNO_UNIT_TO_SALES_UNIT` (Hour → hr)."""

GENDER_TO_FNO = ValueMap("gendercode → Gender", {"1": "Male", "2": "Female", "": "Unknown"})
"""Sales `gendercode` (1 Male, 2 Female) → F&O `Gender`; blank → Unknown [I]."""

MARITAL_STATUS_TO_FNO = ValueMap(
    "familystatuscode → MaritalStatus",
    {"1": "Single", "2": "Married", "3": "Divorced", "4": "Widowhood", "": "None"},
)
"""Sales `familystatuscode` → F&O `DirPersonMaritalStatus`; blank → None [I]."""

FNO_PROCESSING_STATUS_TO_SALES = ValueMap(
    "SalesOrderProcessingStatus → msdynce_processingstatus",
    {
        "Active": "647390000",
        "Confirmed": "647390001",
        "Picked": "647390004",
        "PartiallyDelivered": "647390008",
        "Delivered": "647390007",
        "PartiallyInvoiced": "647390009",
        "DeliveredPartiallyInvoiced": "647390009",
        "Invoiced": "647390003",
        "Canceled": "647390010",
    },
)
"""The proposed map of reference 3.3 [I]."""


def _country_names() -> dict[str, str]:
    return {c.alpha_3: getattr(c, "common_name", None) or c.name for c in pycountry.countries}


FNO_COUNTRY_TO_SALES = ValueMap("F&O country/region → country name", _country_names())
"""F&O `…CountryRegionId` (ISO alpha-3 in a standard set-up) → the country name Sales shows."""

PRICE_LIST_BY_CURRENCY = ValueMap(
    "currency → price list",
    {"USD": "CRM Service USA (sample)", "CAD": "CRM Service Canada", "EUR": "CRM Service Europe"},
)
"""Price list per currency; the template default for USD is "CRM Service USA (sample)" [R S6,
S7]; the others are this project's demo names — override them in p2c.toml."""
