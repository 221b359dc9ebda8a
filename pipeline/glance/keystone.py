"""A real Keystone (from PyPI) on 127.0.0.1: sqlite, Fernet tokens, served by gunicorn.

Creating Keystone's database and bootstrapping it takes about ten seconds of keystone-manage; the result
is kept as a template (per Keystone version) and copied, so a local cloud starts in a few seconds after the
first time. Every copy gets fresh Fernet and credential keys.
"""

from __future__ import annotations

import base64
import os
import secrets as random_secrets
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from pipeline.common.errors import BakeryError
from pipeline.common.paths import PROJECT_ROOT
from pipeline.common.run import run
from pipeline.glance.server import LoopbackServer, venv_tool

KEYSTONE_CONF = """\
[DEFAULT]
log_file = {root}/keystone.log
[database]
connection = {connection}
[token]
provider = fernet
expiration = {token_lifetime}
[fernet_tokens]
key_repository = {root}/fernet-keys
[fernet_receipts]
key_repository = {root}/fernet-receipts
[credential]
key_repository = {root}/credential-keys
[identity]
# bcrypt's minimum cost: a loopback test cloud logs in hundreds of times (short token lifetimes); the
# default cost makes each login take a quarter of a second of CPU
password_hash_rounds = 4
"""
BOOTSTRAP_URL = "http://127.0.0.1:5000/v3"  # replaced by the real port once the server answers
REGION = "RegionOne"


def template_root() -> Path:
    """Kept across runs and test sessions (not in the per-run state directory): building it is the slow part."""
    return Path(os.environ.get("BAKERY_TEMPLATE_DIR", PROJECT_ROOT / ".bakery" / "templates")).resolve()


class LocalKeystone(LoopbackServer):
    name = "Keystone"
    application = "pipeline.glance.keystone_app:application"
    health_path = "/v3"

    def __init__(self, root: Path, port: int, *, token_lifetime: int = 3600, database_url: str | None = None):
        """database_url: a MariaDB database (the production-shaped cloud); sqlite in the state directory if None."""
        super().__init__(root, port)
        self.token_lifetime = token_lifetime
        self.database_url = database_url

    @property
    def auth_url(self) -> str:
        return f"{self.url}/v3"

    @property
    def conf(self) -> Path:
        return self.root / "keystone.conf"

    def environment(self) -> dict[str, str]:
        return {"OS_KEYSTONE_CONFIG_FILES": str(self.conf)}

    def extra_log(self) -> Path:
        return self.root / "keystone.log"

    def admin_password(self) -> str:
        return (self.root / "admin-password").read_text().strip()

    def prepare(self) -> None:
        _write_config(self.root, self.token_lifetime, self.database_url)
        if self.database_url:
            if not (self.root / "admin-password").exists():
                _bootstrap(self.root)  # a database of its own: no sqlite template to copy
        elif not (self.root / "keystone.sqlite").exists():
            template = _template()
            shutil.copyfile(template / "keystone.sqlite", self.root / "keystone.sqlite")
            shutil.copyfile(template / "admin-password", self.root / "admin-password")
            (self.root / "admin-password").chmod(0o600)
        for repository in ("fernet-keys", "fernet-receipts", "credential-keys"):
            if not (self.root / repository).is_dir():
                _fresh_keys(self.root / repository)


def _write_config(root: Path, token_lifetime: int, database_url: str | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    connection = database_url or f"sqlite:///{root}/keystone.sqlite?timeout=60"
    (root / "keystone.conf").write_text(KEYSTONE_CONF.format(root=root, token_lifetime=token_lifetime, connection=connection))


def _bootstrap(root: Path) -> None:
    """db_sync and bootstrap into the configured database; the admin password is written last, so its
    presence says the database is ready."""
    for repository in ("fernet-keys", "fernet-receipts", "credential-keys"):
        if not (root / repository).is_dir():
            _fresh_keys(root / repository)
    password = random_secrets.token_urlsafe(24)
    manage = [venv_tool("keystone-manage"), "--config-file", root / "keystone.conf"]
    run([*manage, "db_sync"], timeout=900)
    run([*manage, "bootstrap", "--bootstrap-password", password, "--bootstrap-region-id", REGION,
         "--bootstrap-admin-url", BOOTSTRAP_URL, "--bootstrap-public-url", BOOTSTRAP_URL,
         "--bootstrap-internal-url", BOOTSTRAP_URL], timeout=600)
    (root / "admin-password").write_text(password + "\n")
    (root / "admin-password").chmod(0o600)


def _fresh_keys(repository: Path) -> None:
    """A key repository as keystone-manage fernet_setup writes it: key 0 staged, key 1 primary."""
    repository.mkdir(parents=True, mode=0o700)
    for index in (0, 1):
        key = repository / str(index)
        key.write_bytes(base64.urlsafe_b64encode(random_secrets.token_bytes(32)))
        key.chmod(0o600)


def _template() -> Path:
    """The database after db_sync and bootstrap, with the admin password it was bootstrapped with."""
    version = metadata.version("keystone")
    template = template_root() / f"keystone-{version}"
    if (template / "keystone.sqlite").exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".keystone-{version}-", dir=template.parent))
    try:
        _write_config(building, 3600)
        for repository in ("fernet-keys", "fernet-receipts", "credential-keys"):
            _fresh_keys(building / repository)
        password = random_secrets.token_urlsafe(24)
        manage = [venv_tool("keystone-manage"), "--config-file", building / "keystone.conf"]
        run([*manage, "db_sync"], timeout=600)
        run([*manage, "bootstrap", "--bootstrap-password", password, "--bootstrap-region-id", REGION,
             "--bootstrap-admin-url", BOOTSTRAP_URL, "--bootstrap-public-url", BOOTSTRAP_URL,
             "--bootstrap-internal-url", BOOTSTRAP_URL], timeout=600)
        (building / "admin-password").write_text(password + "\n")
        (building / "admin-password").chmod(0o600)
        for leftover in ("fernet-keys", "fernet-receipts", "credential-keys", "keystone.conf", "keystone.log"):
            path = building / leftover
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        try:
            building.rename(template)
        except OSError:  # another run built it first: theirs is as good
            shutil.rmtree(building, ignore_errors=True)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    if not (template / "keystone.sqlite").exists():
        raise BakeryError(f"the Keystone template {template} could not be built")
    return template

