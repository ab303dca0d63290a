"""Issue 10 items 4, 10, 11 on the device: no downgrade without an operator's rollback, malformed
registry metadata never stops `edge pull --watch`, odd folder names break nothing, NAME is
validated everywhere, a refused rollback rewrites nothing, a store is never its own source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from strato import ConfigError, DowngradeRefused, ModelNotFound, Registry
from strato._cli import app
from strato_edge.device_store import served_versions
from strato_edge.sync import pull, rollback, served_record
from support import build_tiny_bundle
from typer.testing import CliRunner

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()


def _source(tmp_path: Path, versions: int = 3) -> Registry:
    source = Registry(tmp_path / "registry")
    for v in range(1, versions + 1):
        source.publish(build_tiny_bundle(tmp_path / f"b{v}", version=str(v), seed=v))
    return source


# --- item 4: downgrade --------------------------------------------------------------------------
def test_an_alias_moved_below_the_highest_served_version_is_refused(tmp_path):
    source = _source(tmp_path)
    store = tmp_path / "device"
    for v in ("1", "2", "3"):
        source.promote("tiny", v, "prod")
        pull("tiny@prod", source=source, store=store)
    assert served_record(store, "tiny")["highest"] == "3"
    source.promote("tiny", "1", "prod")  # a hostile or careless registry moves prod back
    aliases_before = (store / "tiny" / "aliases.json").read_bytes()
    with pytest.raises(DowngradeRefused, match=r"below tiny:3.*strato edge rollback tiny --to 1"):
        pull("tiny@prod", source=source, store=store)
    with pytest.raises(DowngradeRefused):
        pull("tiny:2", source=source, store=store)  # a pinned older version too
    assert (store / "tiny" / "aliases.json").read_bytes() == aliases_before
    assert served_versions(store) == {"tiny": "3"}

    # the operator's explicit act, through the CLI
    result = runner.invoke(app, ["edge", "rollback", "tiny", "--to", "1", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert served_versions(store) == {"tiny": "1"}
    assert pull("tiny@prod", source=source, store=store).version == "1"  # accepted now
    source.promote("tiny", "3", "prod")
    assert pull("tiny@prod", source=source, store=store).version == "3"
    source.promote("tiny", "2", "prod")
    with pytest.raises(DowngradeRefused):  # the acceptance was for 1, and is gone after 3
        pull("tiny@prod", source=source, store=store)


# --- item 10: malformed metadata, odd names, NAME validation, refused rollback ----------------
def _start_watch(source: Registry, store: Path, log: Path) -> subprocess.Popen[bytes]:
    code = "from strato._cli import main; main()"
    args = ["edge", "pull", "tiny@prod", "--registry", source.url, "--store", str(store)]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args, "--watch", "--interval", "0.2"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "STRATO_DEBUG": ""},
    )


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_watch_survives_a_malformed_aliases_json(tmp_path):
    source = _source(tmp_path, versions=2)
    source.promote("tiny", "1", "prod")
    store, log = tmp_path / "device", tmp_path / "watch.log"
    proc = _start_watch(source, store, log)
    try:
        assert _wait(lambda: served_versions(store) == {"tiny": "1"} if store.is_dir() else False)
        aliases = Path(source.url) / "tiny" / "aliases.json"
        good = aliases.read_text()
        aliases.write_text(good.rstrip().rstrip("}") + ",\n}")  # a trailing comma
        assert _wait(lambda: "malformed" in log.read_text()), log.read_text()
        assert proc.poll() is None, log.read_text()  # still watching
        aliases.write_text(good)
        source.promote("tiny", "2", "prod")
        assert _wait(lambda: served_versions(store) == {"tiny": "2"}), log.read_text()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in log.read_text()


def test_a_version_folder_named_superscript_two_breaks_nothing(tmp_path):
    source = _source(tmp_path, versions=1)
    shutil.copytree(Path(source.url) / "tiny" / "1", Path(source.url) / "tiny" / "²")
    assert source.versions("tiny") == ["1"]
    assert source.next_version("tiny") == "2"
    result = runner.invoke(app, ["models", "ls", "--registry", source.url, "--json"])
    assert result.exit_code == 0, result.output
    store = tmp_path / "device"
    assert pull("tiny", source=source, store=store).version == "1"
    shutil.copytree(store / "tiny" / "1", store / "tiny" / "²")
    assert served_versions(store) == {"tiny": "1"}


@pytest.mark.parametrize("command", ["models", "edge"])
def test_rollback_validates_name_and_never_writes_outside(tmp_path, command):
    root = tmp_path / "inside"
    (root).mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    doc = {
        "aliases": {"prod": "2", "current": "2"},
        "history": {"prod": ["1", "2"], "current": ["1", "2"]},
    }
    (outside / "aliases.json").write_text(json.dumps(doc))
    before = (outside / "aliases.json").read_bytes()
    flag = "--registry" if command == "models" else "--store"
    for name in ("../outside", "..", "tiny\n", "/abs"):
        result = runner.invoke(app, [command, "rollback", name, flag, str(root)])
        assert result.exit_code != 0, result.output
    assert (outside / "aliases.json").read_bytes() == before
    with pytest.raises(ModelNotFound, match="invalid"):
        rollback(root, "../outside")


def test_references_with_a_trailing_newline_are_refused():
    from strato import ModelRef

    for text in ("tiny\n", "tiny@prod\n", "tiny:1\n", "tiny\n@prod"):
        with pytest.raises(ModelNotFound, match="invalid model reference"):
            ModelRef.parse(text)


def test_rollback_to_a_pruned_version_rewrites_nothing(tmp_path):
    source = _source(tmp_path, versions=3)
    store = tmp_path / "device"
    for v in ("1", "2", "3"):
        pull(f"tiny:{v}", source=source, store=store, keep=1)
    aliases = store / "tiny" / "aliases.json"
    before = aliases.read_bytes()
    with pytest.raises(ConfigError, match="no longer installed"):
        rollback(store, "tiny")
    with pytest.raises(ConfigError, match="no longer installed"):
        rollback(store, "tiny", to="1")
    assert aliases.read_bytes() == before


# --- item 11: a store is never its own source --------------------------------------------------
def test_a_store_that_is_its_source_is_refused_and_nothing_is_pruned(tmp_path):
    source = _source(tmp_path, versions=5)
    with pytest.raises(ConfigError, match="is the source registry"):
        pull("tiny", source=source, store=Path(source.url) / ".", keep=1)
    assert source.versions("tiny") == ["1", "2", "3", "4", "5"]


def test_default_store_is_not_the_default_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STRATO_REGISTRY", raising=False)
    monkeypatch.delenv("STRATO_EDGE_STORE", raising=False)
    source = Registry(".strato/registry")
    for v in range(1, 6):
        source.publish(build_tiny_bundle(tmp_path / f"b{v}", version=str(v), seed=v), alias="prod")
    result = runner.invoke(app, ["edge", "pull", "tiny@prod", "--keep", "1"])
    assert result.exit_code == 0, result.output
    assert source.versions("tiny") == ["1", "2", "3", "4", "5"]  # nothing pruned
    assert Registry(".strato/device").versions("tiny") == ["5"]


def test_a_serving_daemon_keeps_its_version_through_bad_store_metadata(tmp_path, edge_server):
    """A torn/malformed aliases.json or a `²` folder in the store never stops or switches the
    daemon: it keeps serving what it served, and says why in the log."""
    source = _source(tmp_path, versions=2)
    store = tmp_path / "device"
    pull("tiny:1", source=source, store=store)
    shutil.copytree(source.store.root / "tiny" / "2", store / "tiny" / "2")  # newest, not current
    shutil.copytree(store / "tiny" / "1", store / "tiny" / "²")
    server = edge_server(store)
    with server.client() as http:
        assert http.get("/v2/health/ready").status_code == 200
        assert http.get("/v2/models/tiny").json()["versions"] == ["1", "2"]
        aliases = store / "tiny" / "aliases.json"
        aliases.write_text(aliases.read_text().rstrip().rstrip("}") + ",}")
        time.sleep(1.0)  # ten store checks at watch_interval_s=0.1
        assert http.get("/v2/health/ready").status_code == 200
        assert http.get("/v2/models/tiny/ready").status_code == 200
        assert served_versions(store, {"tiny": "1"}) == {"tiny": "1"}
        metadata = http.get("/v2/models/tiny").json()
        assert metadata["parameters"]["version"] == "1", metadata  # not switched to the newest


@pytest.mark.parametrize("damage", ["truncated", "garbage", "deleted"])
def test_a_lost_or_torn_served_record_never_reopens_the_downgrade(tmp_path, damage):
    """served.json torn by a power cut (zero bytes after the rename), edited, or removed: the
    floor is the highest installed version, not "nothing served yet" (which accepted v1)."""
    source = _source(tmp_path)
    store = tmp_path / "device"
    source.promote("tiny", "3", "prod")
    pull("tiny@prod", source=source, store=store)
    record = store / "tiny" / "served.json"
    if damage == "deleted":
        record.unlink()
    else:
        record.write_bytes(b"" if damage == "truncated" else b'{"highest": ')
    source.promote("tiny", "1", "prod")
    with pytest.raises(DowngradeRefused):
        pull("tiny@prod", source=source, store=store)
    assert served_versions(store) == {"tiny": "3"}
