"""Accounts (Sales to Fin and Ops) - Direct: `accounts` → `CustomersV2`.

Reference section 2.2. The account number is the customer account and the party number; a
blank account number gets a stable `ACC-` number (derived.generated_number), an existing one
never changes.
Defaults are the template's [R]: customer group 10, language en-us, site 1, warehouse 13,
externally maintained Yes; party type Organization [I]. Countries of any spelling become the
ISO alpha-3 code; a blank primary or delivery country becomes USA [R via-CDS template], an
unknown one is a reject. Address 2 becomes the invoice address [I, dual-write]. Only active
accounts (statecode 0) are synchronised [I, recommended filter]. The target scope is the
company's organization customers; contact customers (PartyType Person) belong to the
contact_customers flow.
"""

from __future__ import annotations

from p2c_etl.flows.derived import ACCOUNT_NUMBER
from p2c_etl.flows.valuemaps import COUNTRY_TO_ISO3, COUNTRY_TO_ISO3_BLANK_USA
from p2c_etl.model.flow import EntityRef, Field, Filter, Flow, FromContext, Lookup

ISO_BY_CURRENCY_ID = Lookup(
    "crm", "transactioncurrencies", match="transactioncurrencyid", returns="isocurrencycode"
)


def _address(prefix: str, source: str, blank_country_usa: bool) -> tuple[Field, ...]:
    country_map = COUNTRY_TO_ISO3_BLANK_USA if blank_country_usa else COUNTRY_TO_ISO3
    return (
        Field(f"{prefix}Street", f"{source}_line1"),
        Field(f"{prefix}City", f"{source}_city"),
        Field(f"{prefix}ZipCode", f"{source}_postalcode"),
        Field(f"{prefix}State", f"{source}_stateorprovince"),
        Field(f"{prefix}County", f"{source}_county"),
        Field(f"{prefix}CountryRegionISOCode", f"{source}_country", value_map=country_map),
    )


ACCOUNTS = Flow(
    name="accounts",
    description="Active Sales accounts become customers of the company in Finance and Operations.",
    notes=__doc__ or "",
    source=EntityRef("crm", "accounts"),
    dated_by="createdon",
    target=EntityRef("erp", "CustomersV2"),
    source_keys=("p2c_accountnumber",),
    keys=("dataAreaId", "CustomerAccount"),
    source_filters=(Filter("statecode", "eq", 0),),
    target_filters=(
        Filter("dataAreaId", "eq", FromContext("company")),
        Filter("PartyType", "eq", "Organization"),
    ),
    derive=(ACCOUNT_NUMBER,),
    fields=(
        Field("dataAreaId", default=FromContext("company")),
        Field("CustomerAccount", "p2c_accountnumber"),
        Field("PartyNumber", "p2c_accountnumber"),
        Field("PartyType", default="Organization"),
        Field("OrganizationName", "name"),
        Field("CustomerGroupId", default="10"),
        Field("LanguageId", default="en-us"),
        Field("SiteId", default="1"),
        Field("WarehouseId", default="13"),
        Field("IsExternallyMaintained", default="Yes"),
        Field("SalesCurrencyCode", "_transactioncurrencyid_value", lookup=ISO_BY_CURRENCY_ID),
        *_address("Address", "address1", blank_country_usa=True),
        *_address("DeliveryAddress", "address1", blank_country_usa=True),
        *_address("InvoiceAddress", "address2", blank_country_usa=False),
        Field("PrimaryContactPhone", "telephone1"),
        Field("PrimaryContactFax", "fax"),
        Field("PrimaryContactEmail", "emailaddress1"),
        Field("PrimaryContactURL", "websiteurl"),
        Field("SalesMemo", "description"),
        Field("CreditLimit", "creditlimit"),
        Field("OrganizationNumberOfEmployees", "numberofemployees"),
    ),
)
