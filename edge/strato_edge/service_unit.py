"""`strato edge install-service`: the daemon (and its sync agent) as hardened systemd units.

Two units, so systemd supervises each process on its own: `strato-edge.service` runs
`strato edge serve`, `strato-edge-pull.service` runs `strato edge pull --watch REF` (only when a
model reference is given). Both run as a dedicated unprivileged user, restart on failure and read
secrets (the bearer token, AWS credentials, the S3 endpoint) from an `EnvironmentFile` that only
root can read: systemd reads it before it drops privileges, so no secret lands in a unit file.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from strato import ConfigError

from strato_edge.config import is_loopback

__all__ = [
    "PULL_UNIT",
    "SERVE_UNIT",
    "ServiceFiles",
    "ServiceSpec",
    "default_executable",
    "environment_file",
    "pull_unit",
    "serve_unit",
    "sysusers_conf",
    "write_service",
]

SERVE_UNIT = "strato-edge.service"
PULL_UNIT = "strato-edge-pull.service"

# What the daemon never needs: no new privileges, a read-only OS, no home folders, a private
# /tmp, no kernel or clock knobs. Not set, on purpose: PrivateDevices (Jetson's GPU is
# /dev/nvhost-*, /dev/nvmap) and MemoryDenyWriteExecute (CUDA and TensorRT JIT-compile kernels).
_HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictSUIDSGID=yes",
    "RestrictRealtime=yes",
    "RestrictNamespaces=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "UMask=0027",
)


@dataclass(frozen=True)
class ServiceSpec:
    """What the units run: where the store lives, what to serve and whom as."""

    executable: Path
    store: Path = Path("/var/lib/strato/registry")
    user: str = "strato"
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = None
    model: str | None = None
    registry: str | None = None
    interval_s: float = 30.0
    environment_file: Path = Path("/etc/strato/edge.env")
    gpu: bool = True
    serve_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.executable.is_absolute():
            raise ConfigError(f"the strato executable must be an absolute path: {self.executable}")
        if not self.store.is_absolute():
            raise ConfigError(f"the store must be an absolute path: {self.store}")
        if not self.user or not self.user.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"not a valid user name: {self.user!r}")
        if self.model is not None and not self.registry:
            raise ConfigError("--model needs --registry (where `edge pull --watch` follows it)")
        if self.interval_s <= 0:
            raise ConfigError(f"the pull interval must be > 0 seconds, got {self.interval_s}")

    @property
    def state_directory(self) -> str | None:
        """The `StateDirectory=` name when the store is under /var/lib (systemd creates it)."""
        parts = self.store.parts
        return parts[3] if len(parts) > 3 and parts[:3] == ("/", "var", "lib") else None


def default_executable() -> Path:
    """The `strato` next to this interpreter (a venv's bin), else the one on PATH."""
    beside = Path(sys.executable).with_name("strato")
    if beside.is_file():
        return beside
    found = shutil.which("strato")
    return Path(found).resolve() if found else beside


def _quote(arg: str) -> str:
    # systemd splits ExecStart= on whitespace and expands `%` specifiers and `$VAR`s.
    escaped = arg.replace("\\", "\\\\").replace("%", "%%").replace("$", "$$")
    if any(c.isspace() for c in escaped) or '"' in escaped or not escaped:
        return '"' + escaped.replace('"', '\\"') + '"'
    return escaped


def _exec(spec: ServiceSpec, *args: str) -> str:
    return "ExecStart=" + " ".join(_quote(a) for a in (str(spec.executable), *args))


def _service_section(spec: ServiceSpec, exec_start: str) -> list[str]:
    lines = [
        "[Service]",
        "Type=simple",
        f"User={spec.user}",
        f"Group={spec.user}",
        f"EnvironmentFile=-{spec.environment_file}",
        exec_start,
        "Restart=on-failure",
        "RestartSec=2s",
        "TimeoutStopSec=30s",
    ]
    if spec.gpu:  # Jetson's GPU device nodes belong to group `video`
        lines.append("SupplementaryGroups=video")
    if spec.state_directory:
        lines += [f"StateDirectory={spec.state_directory}", "StateDirectoryMode=0750"]
    lines.append(f"ReadWritePaths={_rw_path(spec)}")
    if min(spec.port, spec.grpc_port or 1024) < 1024:
        lines += [
            "AmbientCapabilities=CAP_NET_BIND_SERVICE",
            "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        ]
    else:
        lines.append("CapabilityBoundingSet=")
    return lines + list(_HARDENING)


def _rw_path(spec: ServiceSpec) -> str:
    # The store's top folder under /var/lib: `edge pull` writes sibling staging folders.
    if spec.state_directory:
        return f"/var/lib/{spec.state_directory}"
    return str(spec.store)


def serve_unit(spec: ServiceSpec) -> str:
    """`strato-edge.service`: `strato edge serve` on the store."""
    args = ["edge", "serve", "--store", str(spec.store), "--host", spec.host]
    args += ["--port", str(spec.port)]
    if spec.grpc_port is not None:
        args += ["--grpc-port", str(spec.grpc_port)]
    args += list(spec.serve_args)
    lines = [
        "[Unit]",
        "Description=strato edge inference daemon (Open Inference Protocol v2)",
        "After=network-online.target",
        "Wants=network-online.target",
    ]
    if spec.model is not None:
        lines.append(f"Wants={PULL_UNIT}")
    lines.append("")
    lines += _service_section(spec, _exec(spec, *args))
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def pull_unit(spec: ServiceSpec) -> str:
    """`strato-edge-pull.service`: `strato edge pull --watch` keeps the store on the reference."""
    if spec.model is None or spec.registry is None:
        raise ConfigError("a pull unit needs a model reference and a registry")
    args = ["edge", "pull", spec.model, "--watch", "--registry", spec.registry]
    args += ["--store", str(spec.store), "--interval", f"{spec.interval_s:g}"]
    lines = [
        "[Unit]",
        f"Description=strato edge sync agent: follows {spec.model} in {spec.registry}",
        "After=network-online.target",
        "Wants=network-online.target",
        f"PartOf={SERVE_UNIT}",
        "",
        *_service_section(spec, _exec(spec, *args)),
        "",
        "[Install]",
        f"WantedBy={SERVE_UNIT}",
        "",
    ]
    return "\n".join(lines)


def environment_file(spec: ServiceSpec, token: str | None) -> str:
    """The `EnvironmentFile`: the token, and commented slots for S3 settings."""
    lines = [
        "# strato edge settings, read by systemd as root (mode 0600): keep secrets here.",
        f"STRATO_EDGE_TOKEN={token or ''}",
        "# STRATO_S3_ENDPOINT=https://s3.eu-west-1.amazonaws.com",
        "# AWS_REGION=eu-west-1",
        "# AWS_ACCESS_KEY_ID=...",
        "# AWS_SECRET_ACCESS_KEY=...",
        "",
    ]
    return "\n".join(lines)


def sysusers_conf(spec: ServiceSpec) -> str:
    """A sysusers.d entry: `systemd-sysusers` creates the dedicated system user."""
    home = f"/var/lib/{spec.state_directory}" if spec.state_directory else "-"
    return f'u {spec.user} - "strato edge daemon" {home}\n'


@dataclass(frozen=True)
class ServiceFiles:
    """The files `write_service` wrote, and the token it put in the environment file."""

    units: list[Path]
    environment_file: Path
    sysusers: Path
    token: str | None

    @property
    def all(self) -> list[Path]:
        return [*self.units, self.environment_file, self.sysusers]


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to(path.anchor)


def write_service(
    spec: ServiceSpec,
    *,
    root: Path = Path("/"),
    unit_dir: Path = Path("/etc/systemd/system"),
    token: str | None = None,
) -> ServiceFiles:
    """Write the units, the environment file and the sysusers entry under `root` (a DESTDIR).

    A non-loopback bind needs a token: one is generated when none is given. An existing
    environment file is kept (it may hold credentials an operator added).
    """
    if token is None and not is_loopback(spec.host):
        token = secrets.token_urlsafe(32)
    units = [(SERVE_UNIT, serve_unit(spec))]
    if spec.model is not None:
        units.append((PULL_UNIT, pull_unit(spec)))
    written = []
    for name, text in units:
        path = _under(root, unit_dir / name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    env_path = _under(root, spec.environment_file)
    if env_path.exists():
        token = None  # not ours to report: the operator's file stays as it is
    else:
        env_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(environment_file(spec, token))
    users = _under(root, Path("/usr/lib/sysusers.d/strato.conf"))
    users.parent.mkdir(parents=True, exist_ok=True)
    users.write_text(sysusers_conf(spec))
    return ServiceFiles(written, env_path, users, token)
