"""Carbon-intensity signals: providers behind one interface, and the hub that chains them."""

from __future__ import annotations

from ..clock import Clock
from ..config import ProviderConfig, Settings
from ..interfaces import SignalProvider
from ..metrics import AgentMetrics
from .hub import SignalHub


def build_provider(name: str, config: ProviderConfig, clock: Clock) -> SignalProvider:
    """Construct a provider from its config section. Makes no network call."""
    if config.type == "replay":
        from .replay import ReplayProvider

        return ReplayProvider(name, config, clock)
    if config.type == "electricitymaps":
        from .electricitymaps import ElectricityMapsProvider

        return ElectricityMapsProvider(name, config, clock)
    if config.type == "watttime":
        from .watttime import WattTimeProvider

        return WattTimeProvider(name, config, clock)
    if config.type == "ukci":
        from .ukci import UkCarbonIntensityProvider

        return UkCarbonIntensityProvider(name, config, clock)
    if config.type == "carbonaware":
        from .carbonaware import CarbonAwareSdkProvider

        return CarbonAwareSdkProvider(name, config, clock)
    raise ValueError(f"unknown provider type {config.type!r}")


def build_hub(settings: Settings, clock: Clock, metrics: AgentMetrics | None = None) -> SignalHub:
    providers = {name: build_provider(name, cfg, clock) for name, cfg in settings.providers.items()}
    chains = {
        region: [(src.provider, src.location) for src in cfg.sources]
        for region, cfg in settings.regions.items()
    }
    return SignalHub(providers, chains, clock, staleness_s=settings.staleness_s, metrics=metrics)


__all__ = ["SignalHub", "build_hub", "build_provider"]
