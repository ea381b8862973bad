"""MQTT username/password from secret files or systemd credentials, never from the main config.

A secret comes from a file named in the config (`uplink.password_file`) or from a systemd
credential (`uplink.password_credential = "mqtt-password"`, read from
`$CREDENTIALS_DIRECTORY/mqtt-password`, set by `LoadCredential=` or `SetCredential=` in the
unit). A secret file that group or other users can access (mode & 0o077) is refused: the
message says which file and the chmod that fixes it. The value is the file's text without
its trailing newline.

Exceptions: SecretError (the message names the file and what to do).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_SECRET_BYTES = 4096


class SecretError(Exception):
    """A secret file or credential is missing, unreadable, empty or too open."""


def credential_path(name: str) -> Path:
    """Where systemd put the credential `name` for this service."""
    if not name or "/" in name or name in {".", ".."}:
        raise SecretError(f"'{name}' is not a valid credential name")
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise SecretError(
            f"credential '{name}' needs $CREDENTIALS_DIRECTORY, which systemd sets only for a "
            f"service with LoadCredential={name}:<file> (or SetCredential=); outside systemd "
            "use a *_file setting instead"
        )
    return Path(directory) / name


def read_secret(path: Path, *, check_mode: bool = True) -> str:
    """The secret in `path`; refuses a file that group or other users may access."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise SecretError(f"cannot access secret file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"secret file {path} is not a regular file")
    if check_mode and st.st_mode & 0o077:
        raise SecretError(
            f"secret file {path} is accessible by other users (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}` (and chown it to the "
            "agent's user)"
        )
    if st.st_size > MAX_SECRET_BYTES:
        raise SecretError(f"secret file {path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretError(f"secret file {path} is not UTF-8 text") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise SecretError(f"secret file {path} is empty")
    if "\n" in value:
        raise SecretError(f"secret file {path} has more than one line")
    return value


def resolve(file: Path | None, credential: str | None) -> str | None:
    """The secret from a file or a credential name (at most one of them); None if neither."""
    if file is not None and credential is not None:
        raise SecretError("set either the *_file or the *_credential setting, not both")
    if file is not None:
        return read_secret(file)
    if credential is not None:
        # systemd makes the credential directory private to the service; its files may be
        # group-readable by design, so the mode check is left out there
        return read_secret(credential_path(credential), check_mode=False)
    return None
