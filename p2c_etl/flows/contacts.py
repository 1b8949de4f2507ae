"""Contacts (Sales to Fin and Ops) - Direct, tasks Contacts and ContactToCustomer.

Reference sections 2.3 and 2.4. Routing is computed from Sales data (derived.contact_routing)
instead of the P2C plug-in flags: a contact that is the customer of a quote, order or invoice
is an *active customer* and becomes an F&O customer (PartyType Person); any other contact whose
company is an account becomes a contact person of that account's customer [R S3]. A contact
whose company is another contact, and that is not a customer itself, is filtered out. Blank
contact numbers get a stable `CON-` number. Gender and marital status map to the F&O enums,
blank → Unknown / None [I]; a blank country becomes USA [R S8]. Contact persons reference the
parent's customer record, which must exist in F&O (written by the accounts flow).
"""

from __future__ import annotations

from p2c_etl.flows.accounts import ISO_BY_CURRENCY_ID
from p2c_etl.flows.derived import CONTACT_NUMBER, CONTACT_ROUTING
from p2c_etl.flows.valuemaps import COUNTRY_TO_ISO3_BLANK_USA, GENDER_TO_FNO, MARITAL_STATUS_TO_FNO
from p2c_etl.model.flow import EntityRef, Field, Filter, Flow, FromContext, Lookup

COMPANY = Filter("dataAreaId", "eq", FromContext("company"))
CUSTOMER_IN_ERP = Lookup(
    "erp",
    "CustomersV2",
    match="CustomerAccount",
    returns="CustomerAccount",
    filters=(COMPANY,),
    label="customer",
)
PARTY_OF_CUSTOMER = Lookup(
    "erp",
    "CustomersV2",
    match="CustomerAccount",
    returns="PartyNumber",
    filters=(COMPANY,),
    label="customer",
)
CONTACTS_SOURCE = EntityRef("crm", "contacts")
_DERIVE = (CONTACT_NUMBER, CONTACT_ROUTING)

CONTACTS = Flow(
    name="contacts",
    description="Contacts of accounts that are not customers themselves become contact persons.",
    notes=__doc__ or "",
    source=CONTACTS_SOURCE,
    dated_by="createdon",
    target=EntityRef("erp", "CDSContactPersons"),
    source_keys=("p2c_contactnumber",),
    keys=("dataAreaId", "ContactPersonPartyNumber", "AssociatedPartyNumber"),
    derive=_DERIVE,
    source_filters=(
        Filter("statecode", "eq", 0),
        Filter("p2c_isactivecustomer", "eq", False),
        Filter("p2c_iscompanyanaccount", "eq", True),
    ),
    target_filters=(COMPANY,),
    depends_on=("accounts",),
    fields=(
        Field("dataAreaId", default=FromContext("company")),
        Field("ContactPersonPartyNumber", "p2c_contactnumber"),
        Field("AssociatedPartyNumber", "p2c_parentaccountnumber", lookup=PARTY_OF_CUSTOMER),
        Field("ContactPersonPartyType", default="Person"),
        Field("FirstName", "firstname"),
        Field("MiddleName", "middlename"),
        Field("LastName", "lastname"),
        Field("EmploymentProfession", "jobtitle"),
        Field("EmploymentDepartment", "department"),
        Field("Gender", "gendercode", value_map=GENDER_TO_FNO),
        Field("MaritalStatus", "familystatuscode", value_map=MARITAL_STATUS_TO_FNO),
        Field("PrimaryEmailAddress", "emailaddress1"),
        Field("PrimaryPhoneNumber", "telephone1"),
        Field("PrimaryAddressStreet", "address1_line1"),
        Field("PrimaryAddressCity", "address1_city"),
        Field("PrimaryAddressZipCode", "address1_postalcode"),
        Field("PrimaryAddressStateId", "address1_stateorprovince"),
        Field(
            "PrimaryAddressCountryRegionISOCode",
            "address1_country",
            value_map=COUNTRY_TO_ISO3_BLANK_USA,
        ),
        Field("IsContactPersonExternallyMaintained", default="Yes"),
    ),
)

CONTACT_CUSTOMERS = Flow(
    name="contact_customers",
    description="Contacts that buy (quotes, orders or invoices) become person customers.",
    notes=__doc__ or "",
    source=CONTACTS_SOURCE,
    dated_by="createdon",
    target=EntityRef("erp", "CustomersV2"),
    source_keys=("p2c_contactnumber",),
    keys=("dataAreaId", "CustomerAccount"),
    derive=_DERIVE,
    source_filters=(Filter("statecode", "eq", 0), Filter("p2c_isactivecustomer", "eq", True)),
    target_filters=(COMPANY, Filter("PartyType", "eq", "Person")),
    depends_on=("accounts",),
    fields=(
        Field("dataAreaId", default=FromContext("company")),
        Field("CustomerAccount", "p2c_contactnumber"),
        Field("PartyNumber", "p2c_contactnumber"),
        Field("PartyType", default="Person"),
        Field("PersonFirstName", "firstname"),
        Field("PersonMiddleName", "middlename"),
        Field("PersonLastName", "lastname"),
        Field("PersonProfessionalTitle", "jobtitle"),
        Field("PersonGender", "gendercode", value_map=GENDER_TO_FNO),
        Field("PersonMaritalStatus", "familystatuscode", value_map=MARITAL_STATUS_TO_FNO),
        Field("CustomerGroupId", default="10"),
        Field("LanguageId", default="en-us"),
        Field("SalesCurrencyCode", "_transactioncurrencyid_value", lookup=ISO_BY_CURRENCY_ID),
        Field("AddressStreet", "address1_line1"),
        Field("AddressCity", "address1_city"),
        Field("AddressZipCode", "address1_postalcode"),
        Field("AddressState", "address1_stateorprovince"),
        Field(
            "AddressCountryRegionISOCode", "address1_country", value_map=COUNTRY_TO_ISO3_BLANK_USA
        ),
        Field("PrimaryContactEmail", "emailaddress1"),
        Field("PrimaryContactPhone", "telephone1"),
        Field("IsExternallyMaintained", default="Yes"),
    ),
)
