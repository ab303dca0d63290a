"""`strato models keygen | sign | verify`: Ed25519 signatures over bundle manifests.

`strato._cli` adds them to its `models` sub-app through `register`; cryptography is imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from strato._cli_options import JsonOpt, RegistryOpt, S3EndpointOpt, fail, print_json
from strato._errors import StratoError

__all__ = ["models_keygen", "models_sign", "models_verify", "register"]

TargetArg = Annotated[
    str,
    typer.Argument(
        help="A bundle directory, or a registry reference NAME, NAME:VERSION, NAME@ALIAS."
    ),
]


def _bundle_dir(target: str) -> Path | None:
    path = Path(target)
    return path if (path / "manifest.json").is_file() else None


def models_keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for NAME.key and NAME.pub.")],
    name: Annotated[str, typer.Option(help="Base name of the key files.")] = "strato",
    as_json: JsonOpt = False,
) -> None:
    """Create an Ed25519 signing key pair: NAME.key (private, mode 0600) and NAME.pub.

    Example: strato models keygen --out keys/
    """
    from strato._signing import generate_keypair

    try:
        pair = generate_keypair(out, name=name)
    except StratoError as exc:
        raise fail(str(exc)) from None
    row = {
        "key_id": pair.key_id,
        "private_key": str(pair.private_path),
        "public_key": str(pair.public_path),
    }
    if as_json:
        print_json(row)
        return
    typer.echo(f"key {pair.key_id}")
    typer.echo(f"  private {pair.private_path} (mode 0600: keep it secret, never ship it)")
    typer.echo(f"  public  {pair.public_path} (trust it with STRATO_TRUSTED_KEYS)")


def models_sign(
    target: TargetArg,
    key: Annotated[Path, typer.Option("--key", "-k", help="PEM Ed25519 private key.")],
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign a bundle's manifest (which holds every file's sha256) with an Ed25519 key.

    A registry version stays immutable: its files and hashes do not change; only the manifest's
    `signature` field is written, atomically.

    Example: strato models sign digits-mlp:3 --key keys/strato.key
    """
    from strato._bundle import Bundle
    from strato._registry import Registry

    try:
        with _spinner(as_json, f"signing {target}"):
            directory = _bundle_dir(target)
            if directory is not None:
                # any old signature is about to be replaced; `sign` re-hashes every file
                manifest = Bundle.load(directory, verify=False).sign(key)
            else:
                manifest = Registry(registry, s3_endpoint=s3_endpoint).sign(target, key)
    except StratoError as exc:
        raise fail(str(exc)) from None
    assert manifest.signature is not None
    row = {
        "model": f"{manifest.name}:{manifest.version}",
        "key_id": manifest.signature["key_id"],
        "algorithm": manifest.signature["algorithm"],
        "artifacts": len(manifest.artifacts),
    }
    if as_json:
        print_json(row)
        return
    typer.echo(f"signed {row['model']} with key {row['key_id']} ({row['artifacts']} artifacts)")


def models_verify(
    target: TargetArg,
    trusted: Annotated[
        str | None,
        typer.Option(
            "--trusted",
            "-t",
            help="Trusted PEM public keys: comma-separated files and/or folders "
            "(default: STRATO_TRUSTED_KEYS).",
        ),
    ] = None,
    registry: RegistryOpt = None,
    s3_endpoint: S3EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a bundle's signature against trusted keys, then every artifact's sha256.

    Exits 1 and says which key and which file failed.

    Example: strato models verify digits-mlp@prod --trusted keys/strato.pub
    """
    try:
        with _spinner(as_json, f"verifying {target}"):
            row = _verify(target, trusted, registry, s3_endpoint)
    except StratoError as exc:
        if as_json:
            print_json({"target": target, "ok": False, "error": str(exc)})
            raise typer.Exit(1) from None
        raise fail(str(exc)) from None
    if as_json:
        print_json(row)
        return
    typer.echo(
        f"{row['model']}: signature OK (key {row['key_id']}, {row['key_file']}); "
        f"{row['artifacts']} artifact(s) match their sha256"
    )


def _verify(
    target: str, trusted: str | None, registry: str | None, s3_endpoint: str | None = None
) -> dict[str, Any]:
    from strato._bundle import Bundle
    from strato._errors import ConfigError
    from strato._settings import trusted_keys_spec
    from strato._signing import resolve_trusted_keys

    spec = trusted_keys_spec(trusted)
    if spec is None:
        raise ConfigError("no trusted keys: pass --trusted KEYS or set STRATO_TRUSTED_KEYS")
    keys = resolve_trusted_keys(spec)
    assert keys is not None
    directory = _bundle_dir(target)
    if directory is not None:
        bundle = Bundle.load(directory, trusted_keys=keys)
    else:
        from strato._registry import Registry

        bundle = Registry(registry, trusted_keys=keys, s3_endpoint=s3_endpoint).open(target)
    kid = bundle.check_signature(keys)
    assert kid is not None
    entry = keys.get(kid)
    return {
        "target": target,
        "ok": True,
        "model": bundle.ref,
        "key_id": kid,
        "key_file": entry[1] if entry else "",
        "artifacts": len(bundle.manifest.artifacts),
    }


class _spinner:
    """A rich spinner on stderr while hashing large artifacts; silent with --json."""

    def __init__(self, quiet: bool, message: str) -> None:
        self._status: Any = None
        if not quiet:
            from rich.console import Console

            self._status = Console(stderr=True).status(message)

    def __enter__(self) -> None:
        if self._status is not None:
            self._status.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(*exc)


def register(models_app: typer.Typer) -> None:
    """Add `keygen`, `sign` and `verify` to the `strato models` sub-app."""
    models_app.command("keygen")(models_keygen)
    models_app.command("sign")(models_sign)
    models_app.command("verify")(models_verify)
