"""Where a caller is: phone number -> country, country -> continent and residency zone.

Static world facts kept as plain tables: ITU calling codes (longest prefix
wins), the North American Numbering Plan's Canadian and western area codes,
ISO 3166 alpha-2 country -> continent, and country -> residency zone (the
zone whose regions hold a caller's data when an agent keeps it in the
caller's own zone). Which region a country prefers is *policy* and lives in
the catalog YAML, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CallerLocation",
    "locate_number",
    "continent_of",
    "residency_zone_of",
    "CONTINENTS",
]

CONTINENTS = ("NA", "SA", "EU", "AF", "AS", "OC")
"""Continent codes used throughout routing."""


def _pairs(text: str) -> dict[str, str]:
    """``"1=US 44=GB"`` -> ``{"1": "US", "44": "GB"}``."""
    return {key: value for key, _, value in (item.partition("=") for item in text.split())}


# ITU-T E.164 country calling codes -> ISO 3166-1 alpha-2 (the common ones).
_CALLING_CODES = _pairs("""
    1=US 7=RU 20=EG 27=ZA 30=GR 31=NL 32=BE 33=FR 34=ES 36=HU 39=IT 40=RO 41=CH 43=AT 44=GB 45=DK
    46=SE 47=NO 48=PL 49=DE 51=PE 52=MX 53=CU 54=AR 55=BR 56=CL 57=CO 58=VE 60=MY 61=AU 62=ID 63=PH
    64=NZ 65=SG 66=TH 81=JP 82=KR 84=VN 86=CN 90=TR 91=IN 92=PK 94=LK 95=MM 98=IR 212=MA 213=DZ
    216=TN 233=GH 234=NG 254=KE 255=TZ 256=UG 351=PT 352=LU 353=IE 354=IS 356=MT 357=CY 358=FI
    359=BG 370=LT 371=LV 372=EE 380=UA 381=RS 385=HR 386=SI 420=CZ 421=SK 423=LI 506=CR 507=PA
    593=EC 598=UY 852=HK 853=MO 855=KH 880=BD 886=TW 961=LB 962=JO 965=KW 966=SA 971=AE 972=IL
    974=QA
""")

# NANP (+1) area codes that are not the continental US default.
_CANADA_AREA_CODES = frozenset(
    "204 226 236 249 250 263 289 306 343 354 365 367 368 382 387 403 416 418 428 431 437 438 450 "
    "468 474 506 514 519 548 579 581 584 587 604 613 639 647 672 683 705 709 742 753 778 780 782 "
    "807 819 825 867 873 879 902 905".split()
)
# Pacific and mountain-west area codes (WA, OR, CA, NV, AZ, ID, UT, HI, AK; BC in Canada):
# callers there sit nearer us-west-2 than us-east-1.
_WEST_AREA_CODES = frozenset(
    "206 253 360 425 509 564 458 503 541 971 209 213 279 310 323 341 350 408 415 424 442 510 530 "
    "559 562 619 626 628 650 657 661 669 707 714 747 760 805 818 820 831 840 858 909 916 925 949 "
    "951 702 725 775 480 520 602 623 928 208 986 385 435 801 808 907 236 250 604 672 778".split()
)

_CONTINENT: dict[str, str] = {}
for _continent, _codes in {
    "NA": "US CA MX CU CR PA",
    "SA": "PE AR BR CL CO VE EC UY",
    "EU": "RU GR NL BE FR ES HU IT RO CH AT GB DK SE NO PL DE PT LU IE IS MT CY FI BG LT LV EE UA RS HR SI CZ SK LI TR",
    "AF": "EG ZA MA DZ TN GH NG KE TZ UG",
    "AS": "MY ID PH SG TH JP KR VN CN IN PK LK MM IR HK MO KH BD TW LB JO KW SA AE IL QA",
    "OC": "AU NZ",
}.items():
    for _code in _codes.split():
        _CONTINENT[_code] = _continent

# Residency zones (the catalog's region zones) -> the countries whose callers' own zone it is.
# EU: EU member states, the rest of the EEA, the UK and Switzerland (European data rules).
# US: the United States only; Canadian data in US regions is not "the caller's own zone".
# APAC: East, South and Southeast Asia and Oceania. Mainland China is left out: its rules
# want data inside China, which no zone offers; the Middle East is in no zone either.
_RESIDENCY_ZONES = {
    "EU": "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE IS LI NO GB CH",
    "US": "US",
    "APAC": "AU NZ SG JP KR IN MY ID PH TH VN HK MO TW KH BD LK PK MM",
}
_ZONE_OF = {code: zone for zone, codes in _RESIDENCY_ZONES.items() for code in codes.split()}


@dataclass(frozen=True, slots=True)
class CallerLocation:
    """A caller's country (ISO alpha-2, "" when unknown) and an optional area within it."""

    country: str
    area: str = ""


def locate_number(number: str) -> CallerLocation:
    """Find the country of an E.164 number (``+447700900123`` -> GB); unknown -> ``""``.

    NANP numbers are split into Canada and the US, and callers in western area codes
    get ``area="west"``.
    """
    digits = "".join(ch for ch in number if ch.isdigit())
    if not number.strip().startswith("+") and digits.startswith("00"):
        digits = digits[2:]
    for length in (3, 2, 1):
        country = _CALLING_CODES.get(digits[:length])
        if country is None:
            continue
        if country == "US":
            area_code = digits[1:4]
            if area_code in _CANADA_AREA_CODES:
                country = "CA"
            area = "west" if area_code in _WEST_AREA_CODES else ""
            return CallerLocation(country, area)
        return CallerLocation(country)
    return CallerLocation("")


def continent_of(country: str) -> str:
    """The continent code of a country, or ``""`` when the country is unknown."""
    return _CONTINENT.get(country.upper(), "")


def residency_zone_of(country: str) -> str:
    """The residency zone of a caller from ``country``: ``"EU"``, ``"US"``, ``"APAC"``, or ``""`` for none."""
    return _ZONE_OF.get(country.upper(), "")
