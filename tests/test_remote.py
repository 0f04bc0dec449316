"""Results that live elsewhere: `--out` and `gradjax.load` through a file:// URI and through
S3 (moto's local emulator, from the package registry): the numbers of a local run, and a
second machine (another staging folder) resuming and growing the folder from the store."""

import os

import pyarrow.fs as pafs
import pytest
from conftest import assert_same_results, tiny_sweep_text
from moto.server import ThreadedMotoServer

import gradjax
from gradjax import cli

TEXT = tiny_sweep_text(seeds=6, root_seed=7, grid={"scale": [0.5, 1.0, 2.0]})


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    (root / "tiny.toml").write_text(TEXT)
    assert cli.main(["run", str(root / "tiny.toml"), "--out", str(root / "out"),
                     "--quiet"]) == 0
    return root / "out"


def test_a_file_uri_is_a_local_folder(local, tmp_path):
    (tmp_path / "tiny.toml").write_text(TEXT)
    uri = f"file://{tmp_path}/via%20uri"
    assert cli.main(["run", str(tmp_path / "tiny.toml"), "--out", uri, "--quiet"]) == 0
    assert (tmp_path / "via uri" / "manifest.json").exists()
    assert_same_results(uri, local)


@pytest.fixture
def s3(monkeypatch):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"
                       }.items():
        monkeypatch.setenv(key, value)
    fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir("results")
    yield f"s3://results/tiny?endpoint_override={host}:{port}&scheme=http&region=us-east-1"
    server.stop()


def test_s3_results_resume_and_grow_from_another_machine(local, tmp_path, s3, monkeypatch):
    (tmp_path / "tiny.toml").write_text(TEXT.replace("seeds = 6", "seeds = 4"))
    monkeypatch.chdir(tmp_path)  # staging in ./results/.stage
    assert cli.main(["run", "tiny.toml", "--out", s3, "--quiet"]) == 0
    assert len(gradjax.load(s3, "per_seed")) == 3 * 4 * 4
    # another machine: a fresh staging folder pulls the store's folder and grows it
    os.rename(tmp_path / "results", tmp_path / "first-machine")
    (tmp_path / "tiny.toml").write_text(TEXT)
    assert cli.main(["run", "tiny.toml", "--out", s3, "--quiet"]) == 0
    assert_same_results(s3, local)
    fs, root = pafs.FileSystem.from_uri(s3)
    names = {i.path.removeprefix(root + "/") for i in fs.get_file_info(
        pafs.FileSelector(root, recursive=True)) if i.type == pafs.FileType.File}
    assert "manifest.json" in names and not any("packs" in n or n.endswith(".lock")
                                                for n in names)
