"""Configuration: a YAML file plus GRIDSHIFT_* environment variables (which win).

Nested fields use a double underscore: GRIDSHIFT_API__PORT=9000. Secrets are SecretStr and
are never logged. `load_settings` validates everything at start and raises ConfigError
naming each bad field and what is allowed.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReplayProviderConfig(_Section):
    """Serves a recorded trace as if it were live (time-shifted onto the present)."""

    type: Literal["replay"] = "replay"
    path: str | None = Field(
        default=None, description="CSV trace; empty: the trace bundled with gridshift"
    )
    column: str | None = Field(default=None, description="value column, if the layout has several")
    forecast_horizon_s: float = Field(default=48 * 3600, gt=0)
    noise_pct: float = Field(default=0.0, ge=0, le=100)


class HttpProviderConfig(_Section):
    """Common settings of the live HTTP providers."""

    base_url: str | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    ttl_s: float = Field(default=300.0, ge=0)
    max_calls_per_min: int = Field(default=30, ge=1)
    retries: int = Field(default=3, ge=0, le=10)


class ElectricityMapsConfig(HttpProviderConfig):
    type: Literal["electricitymaps"] = "electricitymaps"
    api_key: SecretStr | None = None
    emission_factor_type: Literal["direct", "lifecycle"] = "direct"


class WattTimeConfig(HttpProviderConfig):
    type: Literal["watttime"] = "watttime"
    username: str | None = None
    password: SecretStr | None = None
    signal_type: Literal["co2_moer", "co2_aoer", "health_damage"] = "co2_moer"


class UkCarbonIntensityConfig(HttpProviderConfig):
    type: Literal["ukci"] = "ukci"


class CarbonAwareSdkConfig(HttpProviderConfig):
    type: Literal["carbonaware"] = "carbonaware"
    signal_kind: Literal["average", "marginal"] = Field(
        default="marginal",
        description="what the SDK's data source serves: WattTime is marginal, "
        "Electricity Maps average",
    )


ProviderConfig = Annotated[
    ReplayProviderConfig
    | ElectricityMapsConfig
    | WattTimeConfig
    | UkCarbonIntensityConfig
    | CarbonAwareSdkConfig,
    Field(discriminator="type"),
]


class SignalSource(_Section):
    provider: str = Field(description="name of an entry under `providers`")
    location: str = Field(default="", description="the provider's id for this region")


class RegionConfig(_Section):
    sources: list[SignalSource] = Field(
        min_length=1, description="tried in order: the fallback chain for this region"
    )
    capacity_gpus: int | None = Field(default=None, ge=0)


class ApiConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535)


class PowerCurvePoint(_Section):
    intensity_g_per_kwh: float = Field(ge=0)
    cap_pct: float = Field(gt=0, le=100, description="percent of the default power limit")


class NvmlConfig(_Section):
    enabled: bool = True
    sample_interval_s: float = Field(default=1.0, gt=0)
    capping: bool = False
    dry_run: bool = False
    min_change_interval_s: float = Field(default=300.0, ge=0)
    energy_interval_s: float = Field(
        default=10.0,
        ge=0,
        description="read the GPU energy counter this often (0: every sample); it is slow on "
        "some drivers, and power is integrated in between",
    )
    curve: list[PowerCurvePoint] = Field(
        default_factory=lambda: [
            PowerCurvePoint(intensity_g_per_kwh=0, cap_pct=100),
            PowerCurvePoint(intensity_g_per_kwh=300, cap_pct=100),
            PowerCurvePoint(intensity_g_per_kwh=500, cap_pct=70),
        ]
    )


class LocalAdapterConfig(_Section):
    gpus: int = Field(default=0, ge=0, description="GPUs on this box that jobs may be given")
    kill_grace_s: float = Field(default=10.0, ge=0)


class SlurmRegionConfig(_Section):
    """Where jobs of one region go in Slurm."""

    partition: str = Field(min_length=1, description="the partition jobs of this region run in")
    capacity_gpus: int | None = Field(
        default=None, ge=0, description="GPUs of this region; empty: counted from sinfo"
    )


class SlurmAdapterConfig(_Section):
    """The Slurm adapter (deploy the agent on the controller node, or any submit host)."""

    regions: dict[str, SlurmRegionConfig] = Field(
        min_length=1, description="region name -> partition; region names as under `regions`"
    )
    default_region: str | None = Field(
        default=None, description="region for jobs that name none; empty: the first one"
    )
    slurm_conf: str | None = Field(default=None, description="SLURM_CONF for every command")
    bin_dir: str | None = Field(
        default=None, description="where sbatch, squeue... live; empty: PATH"
    )
    timeout_s: float = Field(default=30.0, gt=0, le=600, description="per Slurm command")
    start_mode: Literal["hold", "begin"] = Field(
        default="hold",
        description="hold: submit held, release at the planned start; begin: submit with a "
        "begin time at the latest start, moved to the planned start (Slurm starts it even "
        "if the agent is down)",
    )
    output: Literal["auto", "json", "text"] = Field(
        default="auto", description="squeue --json where supported, else the -o text format"
    )
    opt_in_marker: str = Field(
        default="gridshift:", min_length=1, description="comment prefix by which jobs opt in"
    )
    opt_in_partitions: list[str] = Field(
        default_factory=list, description="every job submitted to these partitions opts in"
    )
    claim_on_adopt: bool = Field(
        default=True, description="hold an opted-in native job as soon as it is seen"
    )
    default_duration_s: float = Field(
        default=3600.0, gt=0, description="expected duration of a native job with no time limit"
    )
    time_limit_factor: float | None = Field(
        default=2.0, gt=1, description="time limit = expected duration x this; empty: none"
    )
    interrupt: Literal["suspend", "requeue"] = Field(
        default="suspend",
        description="how interruptible jobs are paused: scontrol suspend, or requeue held",
    )


def _check_default_region(section: str, default: str | None, regions: Mapping[str, Any]) -> None:
    if default is not None and default not in regions:
        raise ValueError(
            f"default_region {default!r} is not one of {section}.regions "
            f"({', '.join(sorted(regions))})"
        )


class RayRegionConfig(_Section):
    """One Ray cluster, as a region gridshift may place jobs in."""

    address: str = Field(
        description="the head node's dashboard (Jobs API), e.g. http://10.0.0.5:8265"
    )
    capacity_gpus: int | None = Field(
        default=None, ge=0, description="GPUs jobs may use in this cluster; empty: unlimited"
    )

    @field_validator("address")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s]+/?", value.strip()):
            raise ValueError(
                f"{value!r} is not the address of a Ray dashboard: give its URL, "
                "e.g. http://10.0.0.5:8265 (the Jobs API listens there)"
            )
        return value.strip().rstrip("/")


class RayAdapterConfig(_Section):
    """The Ray adapter: jobs as Ray Jobs (the head node's Jobs API, over HTTP)."""

    regions: dict[str, RayRegionConfig] = Field(
        min_length=1, description="region name -> Ray cluster; region names as under `regions`"
    )
    default_region: str | None = Field(
        default=None, description="region for jobs that name none; empty: the first one"
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="per HTTP request")
    entrypoint_num_cpus: float = Field(
        default=0.0, ge=0, description="CPUs reserved for each job's entrypoint command"
    )

    @model_validator(mode="after")
    def _default_known(self) -> RayAdapterConfig:
        _check_default_region("ray", self.default_region, self.regions)
        return self


class KubernetesRegionConfig(_Section):
    """One Kubernetes cluster (or namespace), as a region gridshift may place jobs in."""

    api_url: str | None = Field(
        default=None,
        description="the API server, e.g. https://10.0.0.1:6443; empty: the cluster the agent "
        "runs in (KUBERNETES_SERVICE_HOST and _PORT)",
    )
    namespace: str = Field(
        default="default",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="where gridshift creates its Jobs",
    )
    token_file: str | None = Field(
        default=None,
        description="bearer token, read at every request (tokens rotate); empty: the pod's "
        "service-account token where it exists",
    )
    ca_file: str | None = Field(
        default=None,
        description="CA bundle for the API server; empty: the pod's service-account CA where "
        "it exists, else the system's",
    )
    capacity_gpus: int | None = Field(
        default=None, ge=0, description="GPUs jobs may use in this cluster; empty: unlimited"
    )


class KubernetesAdapterConfig(_Section):
    """The Kubernetes adapter: jobs as batch/v1 Jobs, held with `spec.suspend`."""

    regions: dict[str, KubernetesRegionConfig] = Field(
        min_length=1, description="region name -> cluster; region names as under `regions`"
    )
    default_region: str | None = Field(
        default=None, description="region for jobs that name none; empty: the first one"
    )
    image: str | None = Field(
        default=None, description="container image for jobs that name none (engine option)"
    )
    gpu_resource: str = Field(
        default="nvidia.com/gpu", min_length=1, description="extended resource of a GPU"
    )
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="per API request")
    default_duration_s: float = Field(
        default=3600.0,
        gt=0,
        description="expected duration of an adopted Job with neither a gridshift.io/duration "
        "annotation nor activeDeadlineSeconds",
    )

    @model_validator(mode="after")
    def _default_known(self) -> KubernetesAdapterConfig:
        _check_default_region("kubernetes", self.default_region, self.regions)
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GRIDSHIFT_", env_nested_delimiter="__", extra="forbid"
    )

    state_dir: Path = Field(default=Path("./var"), description="database, job logs")
    database_url: str | None = Field(
        default=None,
        description="sqlite:///PATH (default: state_dir/gridshift.db), or "
        "postgresql://USER:PASSWORD@HOST/DATABASE for a database several agents share",
    )
    api: ApiConfig = Field(default_factory=ApiConfig)
    tick_s: float = Field(default=30.0, gt=0, description="planning tick, wall-clock seconds")
    signal_refresh_s: float = Field(default=300.0, gt=0)
    reconcile_s: float = Field(default=10.0, gt=0)
    staleness_s: float = Field(
        default=3 * 3600.0, gt=0, description="older signals are ignored (fail open)"
    )
    default_region: str = "local"
    default_max_delay_s: float = Field(default=24 * 3600.0, ge=0)
    start_slack_s: float = Field(
        default=0.0, ge=0, description="start this much before the latest start, as a margin"
    )
    planner: Literal["window", "carbon"] = Field(
        default="carbon",
        description="carbon: time, region, capacity and suspend/resume planning "
        "(policy/planner.py); window: the lowest-mean-window planner",
    )
    planner_slot_s: float = Field(
        default=1800.0, gt=0, description="resolution of the carbon planner's schedule"
    )
    planner_exact_max_jobs: int = Field(
        default=60,
        ge=0,
        description="where GPUs run short, the carbon planner plans up to this many jobs "
        "not yet started together, exactly; 0 turns it off (see deploy/docs/planner.md)",
    )
    planner_repair_max_jobs: int = Field(
        default=500,
        ge=0,
        description="where jobs not started find no GPUs before their deadline, the carbon "
        "planner plans the tick again with them placed first, while at most this many jobs "
        "wait; 0 turns it off (see deploy/docs/planner.md)",
    )
    planner_straight_relocatable: bool = Field(
        default=True,
        description="where GPUs run short, an interruptible job that may run in several "
        "regions is planned as one run while such runs fit (see deploy/docs/planner.md)",
    )
    providers: dict[str, ProviderConfig] = Field(
        default_factory=lambda: {"replay": ReplayProviderConfig()}  # type: ignore[arg-type]
    )
    regions: dict[str, RegionConfig] = Field(
        default_factory=lambda: {
            "local": RegionConfig(sources=[SignalSource(provider="replay", location="")])
        }
    )
    local: LocalAdapterConfig = Field(default_factory=LocalAdapterConfig)
    slurm: SlurmAdapterConfig | None = None
    ray: RayAdapterConfig | None = None
    kubernetes: KubernetesAdapterConfig | None = None
    nvml: NvmlConfig = Field(default_factory=NvmlConfig)
    clock_speed: float = Field(default=1.0, gt=0, description="demo/test: simulated s per wall s")
    clock_origin: datetime | None = Field(
        default=None, description="with clock_speed != 1 or clock_start: a wall-clock instant"
    )
    clock_start: datetime | None = Field(
        default=None, description="demo/test: the time the clock shows at clock_origin"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _references(self) -> Settings:
        if self.default_region not in self.regions:
            raise ValueError(
                f"default_region {self.default_region!r} is not one of the regions "
                f"configured ({', '.join(sorted(self.regions)) or 'none'})"
            )
        for name, region in self.regions.items():
            for source in region.sources:
                if source.provider not in self.providers:
                    raise ValueError(
                        f"regions.{name}.sources names provider {source.provider!r}, which is "
                        f"not under providers ({', '.join(sorted(self.providers)) or 'none'})"
                    )
        engines = {"ray": self.ray, "kubernetes": self.kubernetes}
        for engine, section in engines.items():
            for name in section.regions if section is not None else ():
                if name not in self.regions:
                    raise ValueError(
                        f"{engine}.regions names region {name!r}, which is not under regions "
                        f"({', '.join(sorted(self.regions))}): each cluster needs its signal"
                    )
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'gridshift.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the YAML file, which arrives as init arguments.
        return env_settings, init_settings


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the documented settings)"
        elif err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
            msg = f"must be one of {err['ctx']['expected']}"
        lines.append(f"  {field}: {msg}")
    return "\n".join(lines)


def default_api_url(environ: Mapping[str, str] | None = None) -> str:
    """Where client commands reach the agent: GRIDSHIFT_API_URL, else where an agent started
    with the same environment listens (GRIDSHIFT_API__HOST, GRIDSHIFT_API__PORT)."""
    environ = os.environ if environ is None else environ
    if url := environ.get("GRIDSHIFT_API_URL"):
        return url
    fields = ApiConfig.model_fields
    host = environ.get("GRIDSHIFT_API__HOST") or fields["host"].default
    port = environ.get("GRIDSHIFT_API__PORT") or fields["port"].default
    if host in ("0.0.0.0", "::"):  # listening everywhere: reach it here
        host = fields["host"].default
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


# GRIDSHIFT_* variables read outside the settings: the client's agent URL, the config file,
# the simulator's trace folder, the id a job's process is given, and the test suite's switch
OTHER_VARIABLES = frozenset(
    {
        "GRIDSHIFT_API_URL",
        "GRIDSHIFT_CONFIG",
        "GRIDSHIFT_TRACE_DIR",
        "GRIDSHIFT_JOB_ID",
        "GRIDSHIFT_REQUIRE_COMPONENTS",
    }
)


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """GRIDSHIFT_* variables that name no setting (an unknown key in the YAML file is
    refused; a mistyped variable would otherwise be ignored without a word), each with the
    closest setting's name."""
    environ = os.environ if environ is None else environ
    fields = [name.upper() for name in Settings.model_fields]
    out = []
    for var in sorted(environ):
        if not var.startswith("GRIDSHIFT_") or var in OTHER_VARIABLES:
            continue
        top = var.removeprefix("GRIDSHIFT_").split("__")[0]
        if top in fields:
            continue
        close = difflib.get_close_matches(top, fields, n=1)
        hint = f"; did you mean GRIDSHIFT_{close[0]}?" if close else ""
        out.append(f"{var} names no setting and is ignored{hint}")
    return out


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any), apply GRIDSHIFT_* variables and `overrides`, validate."""
    data: dict[str, Any] = {}
    source = "defaults and environment"
    path = path or os.environ.get("GRIDSHIFT_CONFIG")
    if path:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings at the top")
        data.update(loaded)
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None
