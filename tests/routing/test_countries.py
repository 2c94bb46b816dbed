"""Caller numbers map to the country, area, continent and residency zone routing uses."""

from __future__ import annotations

import pytest

from aybiza.routing.countries import CallerLocation, continent_of, locate_number, residency_zone_of


@pytest.mark.parametrize(
    ("number", "location"),
    [
        ("+447700900123", CallerLocation("GB")),
        ("+4930901820", CallerLocation("DE")),
        ("+33142685300", CallerLocation("FR")),
        ("+353 1 234 5678", CallerLocation("IE")),
        ("+12025550123", CallerLocation("US")),  # Washington DC
        ("+14155550100", CallerLocation("US", "west")),  # San Francisco
        ("+16045550100", CallerLocation("CA", "west")),  # Vancouver
        ("+14165550100", CallerLocation("CA")),  # Toronto
        ("+6561234567", CallerLocation("SG")),
        ("+61212345678", CallerLocation("AU")),
        ("0044 7700 900123", CallerLocation("GB")),  # international prefix instead of +
        ("+999123", CallerLocation("")),
        ("", CallerLocation("")),
    ],
)
def test_numbers_are_located(number: str, location: CallerLocation) -> None:
    assert locate_number(number) == location


@pytest.mark.parametrize(
    ("country", "continent", "zone"),
    [
        ("GB", "EU", "EU"),
        ("DE", "EU", "EU"),
        ("CH", "EU", "EU"),
        ("NO", "EU", "EU"),
        ("TR", "EU", ""),
        ("US", "NA", "US"),
        ("CA", "NA", ""),
        ("SG", "AS", "APAC"),
        ("JP", "AS", "APAC"),
        ("IN", "AS", "APAC"),
        ("AU", "OC", "APAC"),
        ("CN", "AS", ""),
        ("AE", "AS", ""),
        ("BR", "SA", ""),
        ("ZZ", "", ""),
    ],
)
def test_continent_and_residency(country: str, continent: str, zone: str) -> None:
    assert continent_of(country) == continent
    assert residency_zone_of(country) == zone


def test_every_residency_zone_is_a_catalog_zone() -> None:
    from aybiza.routing.countries import _CONTINENT
    from aybiza.routing.regions import ZONES

    assert {residency_zone_of(country) for country in _CONTINENT} == {"", *ZONES}
