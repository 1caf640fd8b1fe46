"""The Fly token store under concurrent processes and damage (issue 13, item 13).

Writers are real processes (``subprocess`` running the store), so the lock under test is
the cross-process one, not the in-process ``threading.Lock``. An unreadable store is made
for real too: a process out of file descriptors, and a file another user cannot read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atlas_nb.fly.tokens import TokenStore, TokenStoreWarning

WRITERS = 8
ROUNDS = 50

# One writer: wait for the start file (so all of them hit the store at once), put ROUNDS
# entries, print the warnings it saw as JSON.
_WRITER = textwrap.dedent("""
    import json, os, sys, time, warnings
    from atlas_nb.fly.tokens import TokenStore
    directory, index, rounds, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = TokenStore(directory)
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for r in range(rounds):
            store.put(f"w{index}:{r}", f"token-{index}-{r}", source="manual", expires_at=None)
    print(json.dumps([str(w.message) for w in seen]), flush=True)
""")


def _python(code: str, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen([*prefix, sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)


def test_eight_writer_processes_lose_no_entry(tmp_path: Path) -> None:
    directory = tmp_path / "store"  # empty: the first writers also race to create the key
    go = tmp_path / "go"
    procs = [_python(_WRITER, str(directory), str(i), str(ROUNDS), str(go))
             for i in range(WRITERS)]
    for proc in procs:  # every writer has imported everything and is spinning on `go`
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr
    go.touch()
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == [], "a writer saw the store as corrupt"
    store = TokenStore(directory)
    expected = {f"w{i}:{r}": f"token-{i}-{r}" for i in range(WRITERS) for r in range(ROUNDS)}
    assert len(store.names()) == WRITERS * ROUNDS
    for name, token in expected.items():
        entry = store.get(name)
        assert entry is not None and entry["token"] == token
    leftovers = sorted(p.name for p in directory.iterdir())
    assert leftovers == sorted([TokenStore.DATA_FILE, TokenStore.KEY_FILE, TokenStore.LOCK_FILE])


# A process that runs out of file descriptors (a long-lived kernel with a leak) reads the
# store: the read fails with EMFILE, which says nothing about the store's contents.
_OUT_OF_FDS = textwrap.dedent("""
    import json, os, resource, sys, warnings
    from atlas_nb.fly.tokens import TokenStore
    import cryptography.fernet  # imported before the descriptors run out
    store = TokenStore(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = store.get("a")
        store.put("b", "t2", source="manual", expires_at=None)  # cannot read: must not clobber
        names = store.names()
    for fd in held:
        os.close(fd)
    print(json.dumps({"got": got, "names": names,
                      "warnings": [str(w.message) for w in seen]}), flush=True)
""")


def test_running_out_of_file_descriptors_keeps_the_key_and_the_entries(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.put("a", "t", source="manual", expires_at=None)
    key, data = store.key_path.read_bytes(), store.data_path.read_bytes()
    proc = _python(_OUT_OF_FDS, str(tmp_path))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["got"] is None and result["names"] == []  # a miss for that call only
    assert result["warnings"] and all("left in place" in w for w in result["warnings"])
    assert store.key_path.read_bytes() == key
    assert store.data_path.read_bytes() == data
    assert store.get("a") == {"token": "t", "source": "manual", "expires_at": None}
    assert store.names() == ["a"]


_READER = textwrap.dedent("""
    import json, sys, warnings
    from atlas_nb.fly.tokens import TokenStore
    store = TokenStore(sys.argv[1])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = store.get("a")
        store.put("b", "t2", source="manual", expires_at=None)
    print(json.dumps({"got": got, "warnings": [str(w.message) for w in seen]}), flush=True)
""")


def test_an_unreadable_data_file_keeps_the_key(tmp_path: Path) -> None:
    """EACCES on the data file (dir writable): nothing is deleted, moved or overwritten."""
    directory = tmp_path / "store"
    store = TokenStore(directory)
    store.put("a", "t", source="manual", expires_at=None)
    key, data = store.key_path.read_bytes(), store.data_path.read_bytes()
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:  # root reads any file: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a file unreadable")
        prefix = (setpriv, "--bounding-set", "-dac_override,-dac_read_search")
    store.data_path.chmod(0o000)
    proc = _python(_READER, str(directory), prefix=prefix)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["got"] is None
    assert result["warnings"] and all("left in place" in w for w in result["warnings"])
    store.data_path.chmod(0o600)
    assert store.key_path.read_bytes() == key
    assert store.data_path.read_bytes() == data
    assert store.names() == ["a"]


def test_a_data_file_that_is_a_directory_is_an_os_error_not_corruption(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.put("a", "t", source="manual", expires_at=None)
    key = store.key_path.read_bytes()
    store.data_path.unlink()
    store.data_path.mkdir()  # EISDIR on read
    with pytest.warns(TokenStoreWarning, match="left in place"):
        assert store.get("a") is None
    assert store.key_path.read_bytes() == key
    assert store.data_path.is_dir()


def test_a_corrupt_store_is_moved_aside_and_the_key_kept(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.put("a", "t", source="manual", expires_at=None)
    key = store.key_path.read_bytes()
    store.data_path.write_bytes(b"not a fernet token")
    with pytest.warns(TokenStoreWarning, match="moved aside") as caught:
        assert store.get("a") is None
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{TokenStore.DATA_FILE}.corrupt")]
    assert len(aside) == 1 and aside[0].read_bytes() == b"not a fernet token"
    assert str(aside[0]) in str(caught[0].message)
    assert store.key_path.read_bytes() == key  # the key is never deleted with the data
    store.put("b", "t2", source="manual", expires_at=None)
    assert store.names() == ["b"]
    assert store.key_path.read_bytes() == key


def test_a_lost_key_moves_the_data_aside_and_makes_a_new_key(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.put("a", "t", source="manual", expires_at=None)
    data = store.data_path.read_bytes()
    store.key_path.unlink()
    with pytest.warns(TokenStoreWarning, match="moved aside"):
        assert store.get("a") is None
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(f"{TokenStore.DATA_FILE}.corrupt")]
    assert [p.read_bytes() for p in aside] == [data]
    store.put("b", "t2", source="manual", expires_at=None)
    assert store.names() == ["b"]


def test_a_malformed_key_is_moved_aside_too(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    store.put("a", "t", source="manual", expires_at=None)
    store.key_path.write_bytes(b"short")
    with pytest.warns(TokenStoreWarning, match="moved aside"):
        assert store.get("a") is None
    names = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.startswith(f"{TokenStore.KEY_FILE}.corrupt") for n in names)
    assert any(n.startswith(f"{TokenStore.DATA_FILE}.corrupt") for n in names)
    store.put("b", "t2", source="manual", expires_at=None)
    assert store.names() == ["b"]
