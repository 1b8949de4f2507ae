"""The value maps the Prospect to cash templates ship with (reference section 3)."""

from __future__ import annotations

import pycountry

from p2c_etl.flow import ValueMap

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
