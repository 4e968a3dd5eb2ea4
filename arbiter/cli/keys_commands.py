"""``arbiter keys``: make and list the CURVE key pairs that ``configs/security.yaml`` names.

A pair is ``NAME.key`` (the public key, handed to whoever must recognise NAME) and
``NAME.key_secret`` (both keys, kept by NAME alone). Nothing here ever prints a secret key.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import click
import zmq.auth

from arbiter.project.snapshot import Project
from arbiter.security.config import DISABLED, Security, load_security, security_file
from arbiter.security.keyfiles import PUBLIC_SUFFIX, SECRET_SUFFIX, KeyFileError, read_key_file

from .common import Context, echo_json, json_option, pass_context
from .tables import table

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DIR_MODE, SECRET_MODE, PUBLIC_MODE = 0o700, 0o600, 0o644

dir_option = click.option(
    "--dir",
    "key_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the key files are. Default: keys/ under the project root.",
)


@click.group()
def keys() -> None:
    """Make and list CURVE key pairs for the broker and its peers (see docs/SECURITY.md)."""


def _key_dir(ctx: Context, key_dir: Path | None) -> Path:
    return key_dir if key_dir is not None else Path(ctx.root) / "keys"


def _ensure_dir(directory: Path) -> None:
    """Make the key directory private to its owner when we create it; an existing one is kept."""
    if directory.is_dir():
        return
    if directory.exists():
        raise click.ClickException(f"{directory} is not a directory; give --dir a folder for key files")
    directory.mkdir(parents=True, mode=DIR_MODE)
    directory.chmod(DIR_MODE)  # the umask may have taken bits mkdir was asked for


def _write_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write the pair in a private staging folder and move it in, so the secret file is never
    readable by others, not even between being written and being made 0600."""
    staging = Path(tempfile.mkdtemp(prefix=".new-", dir=directory))
    try:
        public, secret = (Path(p) for p in zmq.auth.create_certificates(staging, name))
        secret.chmod(SECRET_MODE)
        public.chmod(PUBLIC_MODE)
        os.replace(secret, directory / secret.name)
        os.replace(public, directory / public.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory / public.name, directory / secret.name


def _shown(path: Path, root: Path) -> str:
    """``path`` as written in configs/security.yaml: relative to the project when inside it."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


@keys.command("new")
@click.argument("name")
@dir_option
@click.option("--force", is_flag=True, help="Replace an existing pair; peers holding its old public key lose access.")
@pass_context
def keys_new(ctx: Context, name: str, key_dir: Path | None, force: bool) -> None:
    """Make the key pair NAME.key (public) and NAME.key_secret (secret, mode 0600).

    Prints the public key and its file; the secret is never printed.
    """
    if not KEY_NAME.match(name):
        hint = "use letters, digits, '.', '_' or '-', starting with a letter or digit"
        raise click.BadParameter(f"{name!r}: {hint}", param_hint="'NAME'")
    directory = _key_dir(ctx, key_dir)
    targets = [directory / f"{name}{suffix}" for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX)]
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        raise click.ClickException(
            f"{existing[0]} already exists; nothing written.\n"
            "  hint: pass --force to replace the pair (peers holding the old public key lose access)"
        )
    _ensure_dir(directory)
    public, secret = _write_pair(directory, name)
    key = read_key_file(public).public.decode("ascii")
    click.echo(f"public key file: {public}")
    click.echo(f"public key:      {key}")
    click.echo(f"secret key file: {secret} (mode 0600; it stays with {name})")
    shown_public, shown_secret = _shown(public, Path(ctx.root)), _shown(secret, Path(ctx.root))
    click.echo("\nIn configs/security.yaml, as")
    click.echo(f"  a peer:     identities: {{{name}: {{public_key_file: {shown_public}}}}}")
    click.echo(f"  the broker: curve: {{secret_key_file: {shown_secret}}}")


def _project_security(ctx: Context) -> Security:
    """configs/security.yaml as far as it loads, for naming who uses a key; a note when it has errors."""
    path = security_file(Project(Path(ctx.root)).config_dir)
    if path is None:
        return DISABLED
    sections, problems = ctx.configs()
    security, found = load_security(Path(ctx.root), sections.get("security"), str(path))
    errors = [d for d in (*problems, *found) if d.severity == "error" and d.path == str(path)]
    if errors:
        click.echo(f"note: {path} has {len(errors)} error(s); `arbiter check-config` shows them", err=True)
    return security


def _names(directory: Path) -> list[str]:
    """The names of the key files in ``directory``, each pair once."""
    names = set()
    for path in directory.iterdir():
        for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX):
            if path.is_file() and path.name.endswith(suffix) and len(path.name) > len(suffix):
                names.add(path.name[: -len(suffix)])
    return sorted(names)


def _entry(directory: Path, name: str, security: Security) -> dict[str, Any]:
    public_file, secret_file = directory / f"{name}{PUBLIC_SUFFIX}", directory / f"{name}{SECRET_SUFFIX}"
    entry: dict[str, Any] = {
        "name": name,
        "publicKey": None,
        "publicKeyFile": str(public_file) if public_file.exists() else None,
        "secret": secret_file.exists(),
        "identity": None,
        "broker": False,
        "problem": None,
    }
    try:
        public = read_key_file(public_file if public_file.exists() else secret_file).public
    except KeyFileError as exc:
        entry["problem"] = exc.message
        return entry
    identity = security.identity_of(public)
    entry.update(
        publicKey=public.decode("ascii"),
        identity=identity.name if identity else None,
        broker=security.public_key == public,
    )
    return entry


def _used_by(entry: dict[str, Any]) -> str | None:
    users = (["broker"] if entry["broker"] else []) + ([entry["identity"]] if entry["identity"] else [])
    return ", ".join(users) or None


@keys.command("list")
@dir_option
@json_option
@pass_context
def keys_list(ctx: Context, key_dir: Path | None, as_json: bool) -> None:
    """List key pairs: name, public key, whether the secret file is there, and who uses it in
    configs/security.yaml (the broker or an identity)."""
    directory = _key_dir(ctx, key_dir)
    if not directory.is_dir():
        if as_json:
            echo_json([])
        click.echo(f"note: no key directory at {directory}; `arbiter keys new NAME` makes one", err=True)
        return
    security = _project_security(ctx)
    entries = [_entry(directory, name, security) for name in _names(directory)]
    if as_json:
        echo_json(entries)
        return
    rows = [
        [e["name"], e["publicKey"] or f"({e['problem']})", "yes" if e["secret"] else "no", _used_by(e)] for e in entries
    ]
    click.echo("\n".join(table(["NAME", "PUBLIC KEY", "SECRET FILE", "USED BY"], rows, rule=True)))
    click.echo(f"\n{len(rows)} key pairs in {directory}")
