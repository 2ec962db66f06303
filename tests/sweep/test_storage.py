"""The sweep storage on a local folder: atomic writes, copies, listings, URIs, and refused remote URIs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdsed.sweep.storage import Storage, StorageError


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_write_read_exists_and_uri(tmp_path):
    root = tmp_path / "store"
    storage = Storage(str(root))
    assert storage.is_local and root.is_dir()  # created on open
    assert not storage.exists("pass1/pseudo.parquet")
    uri = storage.write_bytes("pass1/pseudo.parquet", b"\x00parquet\xff")
    assert uri == f"{root.resolve()}/pass1/pseudo.parquet" == storage.uri("pass1/pseudo.parquet")
    assert storage.exists("pass1/pseudo.parquet") and storage.exists("pass1")
    assert storage.read_bytes("pass1/pseudo.parquet") == b"\x00parquet\xff"
    assert (root / "pass1" / "pseudo.parquet").read_bytes() == b"\x00parquet\xff"
    assert storage.uri("") == str(root.resolve())


def test_overwrite_is_atomic_and_leaves_no_temporary_file(tmp_path):
    storage = Storage(str(tmp_path))
    storage.write_bytes("state.json", b'{"pass": 1}')
    storage.write_bytes("state.json", b'{"pass": 2}')
    local = tmp_path / "outside" / "model.pt"
    local.parent.mkdir()
    local.write_bytes(b"weights")
    storage.put_file(local, "ckpt/deep-none/model.pt")
    storage.put_file(local, "ckpt/deep-none/model.pt")
    assert storage.read_bytes("state.json") == b'{"pass": 2}'
    assert all_files(tmp_path) == ["ckpt/deep-none/model.pt", "outside/model.pt", "state.json"]


def test_put_and_get_file_copy_bytes(tmp_path):
    storage = Storage(str(tmp_path / "store"))
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 100)
    uri = storage.put_file(src, "a/b/c.bin")
    assert uri == storage.uri("a/b/c.bin")
    out = storage.get_file("a/b/c.bin", tmp_path / "fetched" / "deep" / "c.bin")
    assert out == tmp_path / "fetched" / "deep" / "c.bin"
    assert out.read_bytes() == src.read_bytes()


def test_list_dirs_names_only_direct_subfolders(tmp_path):
    storage = Storage(str(tmp_path))
    assert storage.list_dirs("passes") == []  # missing folder: empty, no error
    for rel in ("passes/pass2/x.bin", "passes/pass1/y.bin", "passes/pass1/deep/z.bin", "passes/file.bin"):
        storage.write_bytes(rel, b"1")
    assert storage.list_dirs("passes") == ["pass1", "pass2"]
    assert storage.list_dirs("passes/pass1") == ["deep"]
    assert storage.list_dirs("") == ["passes"]


def test_file_uri_and_relative_paths_are_local(tmp_path, monkeypatch):
    by_uri = Storage(f"file://{tmp_path}/via_uri")
    assert by_uri.is_local and by_uri.uri("x") == f"{tmp_path}/via_uri/x"
    by_uri.write_bytes("x", b"1")
    assert (tmp_path / "via_uri" / "x").read_bytes() == b"1"
    monkeypatch.chdir(tmp_path)
    relative = Storage("kdsed_runs/storage")
    assert relative.uri("") == str((tmp_path / "kdsed_runs" / "storage").resolve())


def test_reading_a_missing_file_raises(tmp_path):
    with pytest.raises(OSError):
        Storage(str(tmp_path)).read_bytes("nope.bin")


@pytest.mark.parametrize("uri", ["nosuchscheme://bucket/x", "://nothing"])
def test_unusable_remote_uri_raises_storage_error(uri):
    with pytest.raises(StorageError, match=f"storage {uri}: cannot open"):
        Storage(uri)


def test_folder_that_cannot_be_created_raises_storage_error(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(StorageError, match="cannot create folder"):
        Storage(str(tmp_path / "a_file" / "store"))
    assert issubclass(StorageError, OSError)
