"""Products (Fin and Ops to Sales) - Direct: `SellableReleasedProducts` → `products`.

Reference section 2.1. The product number is the key; units, unit group and currency are
looked up in Sales by name / ISO code and written as the GUID columns the Web API returns.
Rows 5 (unit group "Default unit") and 12 (`msdynce_ismaintainedexternally` Yes) are template
defaults [R]; `statecode` Active (0) follows known problem 7 (Draft products are unusable).
Only products of the configured company are taken; stopped products are filtered out [I].
"""

from __future__ import annotations

from p2c_etl.flows.valuemaps import (
    FNO_NOYES_TO_BOOL,
    FNO_PRODUCT_TYPE_TO_SALES,
    FNO_UNIT_TO_SALES_UNIT,
)
from p2c_etl.model.flow import EntityRef, Field, Filter, Flow, FromContext, Lookup

UOM_BY_NAME = Lookup("crm", "uoms", match="name", returns="uomid")
UOM_SCHEDULE_BY_NAME = Lookup("crm", "uomschedules", match="name", returns="uomscheduleid")
CURRENCY_BY_ISO = Lookup(
    "crm", "transactioncurrencies", match="isocurrencycode", returns="transactioncurrencyid"
)

PRODUCTS = Flow(
    name="products",
    description="Sellable released products of the company become Sales products.",
    notes=__doc__ or "",
    source=EntityRef("erp", "SellableReleasedProducts"),
    target=EntityRef("crm", "products"),
    source_keys=("ProductNumber",),
    keys=("productnumber",),
    target_id="productid",
    source_filters=(
        Filter("dataAreaId", "eq", FromContext("company")),
        Filter("IsSalesStopped", "ne", "Yes"),
    ),
    fields=(
        Field("productnumber", "ProductNumber"),
        Field("name", "ProductName"),
        Field("description", "ProductDescription"),
        Field(
            "_defaultuomid_value",
            "SalesUnitSymbol",
            value_map=FNO_UNIT_TO_SALES_UNIT,
            lookup=UOM_BY_NAME,
        ),
        Field("_defaultuomscheduleid_value", default="Default unit", lookup=UOM_SCHEDULE_BY_NAME),
        Field("_transactioncurrencyid_value", "CurrencyCode", lookup=CURRENCY_BY_ISO),
        Field("price", "SalesPrice"),
        Field("currentcost", "UnitCost"),
        Field("producttypecode", "ProductType", value_map=FNO_PRODUCT_TYPE_TO_SALES),
        Field("quantitydecimal", "SalesUnitDecimalPrecision"),
        Field("isstockitem", "IsStockedProduct", value_map=FNO_NOYES_TO_BOOL),
        Field("msdynce_ismaintainedexternally", default=True),
        Field("statecode", default=0),
    ),
)
