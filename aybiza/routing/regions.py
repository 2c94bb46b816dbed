"""The region catalog: what each region offers and where callers prefer to go.

The catalog is data (``catalog.yaml`` next to this module is the default)::

    regions:                      # one entry per region, in any order
      <name>:
        zone: US | EU | APAC      # residency zone
        country: US               # ISO alpha-2 of the region's location
        continent: NA             # NA SA EU AF AS OC
        primary: true             # +primary bonus in the score
        bedrock_endpoint: https://bedrock-runtime.<name>.amazonaws.com
        endpoint_url: null        # optional override (fake server, VPC endpoint)
        deepgram_endpoint: https://api.eu.deepgram.com
        tiers: [premium, advanced, fast, economy]
        capacity: 300             # concurrent calls this edge may place there
        probe_url: null           # optional health probe target
    edges:                        # edge metro -> region -> prior RTT in ms
      london: {eu-west-2: 5, ...}
    default: {edge: us-east, preference: []}
    continents: {EU: {edge: frankfurt, preference: [eu-central-1, eu-west-2]}, ...}
    countries:
      US: {edge: us-east, preference: [...], areas: {west: {edge: us-west, preference: [...]}}}

Loading validates everything and raises :class:`~aybiza.errors.ConfigError` with
the offending key; a loaded :class:`Catalog` is immutable.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from aybiza.errors import ConfigError
from aybiza.routing.countries import CONTINENTS, continent_of

__all__ = [
    "ZONES",
    "KNOWN_TIERS",
    "Region",
    "Placement",
    "Catalog",
    "load_catalog",
    "parse_catalog",
    "default_catalog",
]

ZONES = ("US", "EU", "APAC")
"""Residency zones a region can belong to."""

KNOWN_TIERS = ("premium", "advanced", "fast", "economy")
"""Model tiers, best (and dearest) first."""


@dataclass(frozen=True, slots=True)
class Region:
    """One region: its endpoints, the tiers it serves, its capacity and residency zone."""

    name: str
    zone: str
    country: str
    continent: str
    primary: bool
    bedrock_endpoint: str
    deepgram_endpoint: str
    tiers: tuple[str, ...]
    capacity: int
    endpoint_url: str | None = None
    probe_url: str | None = None

    @property
    def bedrock_url(self) -> str:
        """The URL a Bedrock client for this region should use (override first)."""
        return self.endpoint_url or self.bedrock_endpoint

    @property
    def probe_target(self) -> str:
        """The URL the active health probe requests."""
        return self.probe_url or self.bedrock_url


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a group of callers sits (its edge metro) and the regions it prefers, in order."""

    edge: str
    preference: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every region plus the caller placements; look-ups only, never mutated."""

    regions: tuple[Region, ...]
    edges: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    default: Placement = Placement("")
    continents: Mapping[str, Placement] = field(default_factory=dict)
    countries: Mapping[str, Placement] = field(default_factory=dict)
    areas: Mapping[tuple[str, str], Placement] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        """Region names in catalog order."""
        return tuple(region.name for region in self.regions)

    def region(self, name: str) -> Region:
        """The region called ``name``; :class:`ConfigError` if the catalog has none."""
        for region in self.regions:
            if region.name == name:
                return region
        raise ConfigError(f"unknown region {name!r}; the catalog has {', '.join(self.names)}")

    def placement(self, country: str, area: str = "") -> Placement:
        """The placement for a caller: area, then country, then continent, then default."""
        country = country.upper()
        if area and (country, area) in self.areas:
            return self.areas[(country, area)]
        if country in self.countries:
            return self.countries[country]
        continent = continent_of(country)
        if continent in self.continents:
            return self.continents[continent]
        return self.default

    def prior_rtt_ms(self, edge: str, region: str) -> float | None:
        """The catalog's RTT estimate from an edge metro to a region, if it has one."""
        return self.edges.get(edge, {}).get(region)

    def with_endpoints(self, urls: Mapping[str, str], probe_path: str | None = None) -> Catalog:
        """A copy whose regions use ``urls[name]`` as endpoint (and ``url + probe_path`` as probe)."""
        regions = []
        for region in self.regions:
            url = urls.get(region.name)
            if url is None:
                regions.append(region)
                continue
            probe = url.rstrip("/") + probe_path if probe_path is not None else region.probe_url
            regions.append(dataclasses.replace(region, endpoint_url=url, probe_url=probe))
        return dataclasses.replace(self, regions=tuple(regions))


def default_catalog() -> Catalog:
    """The catalog shipped with aybiza (``aybiza/routing/catalog.yaml``)."""
    text = importlib.resources.files("aybiza.routing").joinpath("catalog.yaml").read_text("utf-8")
    return parse_catalog(_load_yaml(text, "aybiza/routing/catalog.yaml"))


def load_catalog(path: str | os.PathLike[str] | None = None) -> Catalog:
    """Load and validate a catalog file; ``None`` loads the default one."""
    if path is None:
        return default_catalog()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read region catalog {os.fspath(path)!r}: {exc}") from exc
    return parse_catalog(_load_yaml(text, os.fspath(path)))


def _load_yaml(text: str, source: str) -> Mapping[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"region catalog {source!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"region catalog {source!r} must be a mapping")
    return data


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    """Build a :class:`Catalog` from already-parsed YAML, checking every field."""
    raw_regions = _mapping(data.get("regions"), "regions")
    if not raw_regions:
        raise ConfigError("region catalog: 'regions' is empty")
    regions = tuple(_parse_region(str(name), _mapping(raw, f"regions.{name}")) for name, raw in raw_regions.items())
    names = {region.name for region in regions}

    edges: dict[str, Mapping[str, float]] = {}
    for edge, row in _mapping(data.get("edges", {}), "edges").items():
        parsed_row: dict[str, float] = {}
        for region, rtt in _mapping(row, f"edges.{edge}").items():
            if region not in names:
                raise ConfigError(f"region catalog: edges.{edge} names unknown region {region!r}")
            if not isinstance(rtt, int | float) or isinstance(rtt, bool) or rtt < 0:
                raise ConfigError(f"region catalog: edges.{edge}.{region} must be a number of ms >= 0")
            parsed_row[str(region)] = float(rtt)
        edges[str(edge)] = MappingProxyType(parsed_row)

    def placement(raw: Any, where: str) -> Placement:
        entry = _mapping(raw, where)
        edge = str(entry.get("edge", ""))
        if edge and edge not in edges:
            raise ConfigError(f"region catalog: {where}.edge names unknown edge {edge!r}")
        raw_preference = _sequence(entry.get("preference", []), f"{where}.preference")
        preference = tuple(str(name) for name in raw_preference)
        for name in preference:
            if name not in names:
                raise ConfigError(f"region catalog: {where}.preference names unknown region {name!r}")
        return Placement(edge, preference)

    default = placement(data.get("default", {"edge": ""}), "default")
    continents: dict[str, Placement] = {}
    for continent, raw in _mapping(data.get("continents", {}), "continents").items():
        if continent not in CONTINENTS:
            raise ConfigError(f"region catalog: unknown continent {continent!r} (use {', '.join(CONTINENTS)})")
        continents[str(continent)] = placement(raw, f"continents.{continent}")
    countries: dict[str, Placement] = {}
    areas: dict[tuple[str, str], Placement] = {}
    for country, raw in _mapping(data.get("countries", {}), "countries").items():
        code = str(country).upper()
        countries[code] = placement(raw, f"countries.{country}")
        for area, raw_area in _mapping(
            _mapping(raw, f"countries.{country}").get("areas", {}), f"countries.{country}.areas"
        ).items():
            areas[(code, str(area))] = placement(raw_area, f"countries.{country}.areas.{area}")
    return Catalog(
        regions=regions,
        edges=MappingProxyType(edges),
        default=default,
        continents=MappingProxyType(continents),
        countries=MappingProxyType(countries),
        areas=MappingProxyType(areas),
    )


def _parse_region(name: str, raw: Mapping[str, Any]) -> Region:
    where = f"regions.{name}"

    def text(key: str, *, required: bool = True) -> str | None:
        value = raw.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"region catalog: {where}.{key} must be a non-empty string")
        return value

    zone = text("zone")
    if zone not in ZONES:
        raise ConfigError(f"region catalog: {where}.zone must be one of {', '.join(ZONES)}, not {zone!r}")
    continent = text("continent")
    if continent not in CONTINENTS:
        raise ConfigError(f"region catalog: {where}.continent must be one of {', '.join(CONTINENTS)}")
    tiers = tuple(str(tier) for tier in _sequence(raw.get("tiers"), f"{where}.tiers"))
    if not tiers:
        raise ConfigError(f"region catalog: {where}.tiers is empty")
    for tier in tiers:
        if tier not in KNOWN_TIERS:
            raise ConfigError(f"region catalog: {where}.tiers has unknown tier {tier!r} (use {', '.join(KNOWN_TIERS)})")
    capacity = raw.get("capacity", 100)
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity <= 0:
        raise ConfigError(f"region catalog: {where}.capacity must be a positive integer")
    primary = raw.get("primary", False)
    if not isinstance(primary, bool):
        raise ConfigError(f"region catalog: {where}.primary must be true or false")
    return Region(
        name=name,
        zone=str(zone),
        country=str(text("country")).upper(),
        continent=str(continent),
        primary=primary,
        bedrock_endpoint=str(text("bedrock_endpoint")),
        deepgram_endpoint=str(text("deepgram_endpoint")),
        tiers=tiers,
        capacity=capacity,
        endpoint_url=text("endpoint_url", required=False),
        probe_url=text("probe_url", required=False),
    )


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"region catalog: {where} must be a mapping")
    return value


def _sequence(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"region catalog: {where} must be a list")
    return value
