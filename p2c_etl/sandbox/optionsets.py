"""The option sets of the served Dataverse columns: value → label (English, 1033).

Labels are those the reference specification lists (§3.3, from the Dataverse entity
reference and the P2C solution), and the standard Active / Inactive of `account`.
`statecode` columns are State, `statuscode` columns Status, the others Picklist. A Boolean
column has the default labels Yes / No. A `statuscode` option names the `statecode` it
belongs to (`State`), a `statecode` option its default status (`DefaultStatus`), where the
reference says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OptionKind = Literal["Picklist", "State", "Status"]


@dataclass(frozen=True)
class OptionSet:
    kind: OptionKind
    labels: dict[int, str]
    states: dict[int, int] | None = None
    """For a Status option set: the statecode of each status value."""


_STATE_ACTIVE = {0: "Active", 1: "Inactive"}
_RELATIONSHIP = {
    1: "Competitor", 2: "Consultant", 3: "Customer", 4: "Investor", 5: "Partner",
    6: "Influencer", 7: "Press", 8: "Prospect", 9: "Reseller", 10: "Supplier", 11: "Vendor",
    12: "Other",
}  # fmt: skip
_PROCESSING = {
    647390000: "Active", 647390001: "Confirmed", 647390002: "Packing Slip",
    647390003: "Invoiced", 647390004: "Picked", 647390005: "Partially Picked",
    647390006: "Partially Packed", 647390007: "Shipped", 647390008: "Partially Shipped",
    647390009: "Partially Invoiced", 647390010: "Cancelled", 647390011: "Draft",
}  # fmt: skip

OPTION_SETS: dict[tuple[str, str], OptionSet] = {
    ("account", "statecode"): OptionSet("State", _STATE_ACTIVE),
    ("account", "statuscode"): OptionSet("Status", {1: "Active", 2: "Inactive"}, {1: 0, 2: 1}),
    ("account", "customertypecode"): OptionSet("Picklist", _RELATIONSHIP),
    ("contact", "statecode"): OptionSet("State", _STATE_ACTIVE),
    ("contact", "gendercode"): OptionSet("Picklist", {1: "Male", 2: "Female"}),
    ("contact", "familystatuscode"): OptionSet(
        "Picklist", {1: "Single", 2: "Married", 3: "Divorced", 4: "Widowed"}
    ),
    ("product", "statecode"): OptionSet(
        "State", {0: "Active", 1: "Retired", 2: "Draft", 3: "Under Revision"}
    ),
    ("product", "producttypecode"): OptionSet(
        "Picklist",
        {1: "Sales Inventory", 2: "Miscellaneous Charges", 3: "Services", 4: "Flat Fees"},
    ),
    ("quote", "statecode"): OptionSet("State", {0: "Draft", 1: "Active", 2: "Won", 3: "Closed"}),
    ("quote", "statuscode"): OptionSet(
        "Status",
        {
            1: "In Progress",
            2: "In Progress",
            3: "Open",
            4: "Won",
            5: "Lost",
            6: "Canceled",
            7: "Revised",
            647390000: "Submitted",
        },
    ),
    ("salesorder", "statecode"): OptionSet(
        "State", {0: "Active", 1: "Submitted", 2: "Canceled", 3: "Fulfilled", 4: "Invoiced"}
    ),
    ("salesorder", "statuscode"): OptionSet(
        "Status",
        {
            1: "New",
            2: "Pending",
            3: "In Progress",
            4: "No Money",
            100001: "Complete",
            100002: "Partial",
            100003: "Invoiced",
        },
    ),
    ("salesorder", "msdynce_processingstatus"): OptionSet("Picklist", _PROCESSING),
}
BOOLEAN_LABELS = {True: "Yes", False: "No"}


def option_set(entity: str, column: str) -> OptionSet | None:
    """The option set of `entity`'s `column` (logical names), None when it has none."""
    return OPTION_SETS.get((entity, column))
