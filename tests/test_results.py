"""Results files: parallel appenders never corrupt the file; torn files are refused."""

import json
import multiprocessing as mp

import pytest

from mars_eval.errors import MarsEvalError
from mars_eval.results import append_rows, config_hash, read_rows


def _writer(path, wid, n):
    for i in range(n):
        append_rows(path, [{"writer": wid, "i": i, "pad": "x" * 500}, {"writer": wid, "i": i, "second": True}])


def test_parallel_appenders_never_corrupt(tmp_path):
    path = tmp_path / "history.jsonl"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    rows = read_rows(path)
    assert len(rows) == 4 * 25 * 2
    for w in range(4):
        mine = [r for r in rows if r["writer"] == w]
        # each append is atomic: the pair of rows from one call stays adjacent and in order
        assert [r["i"] for r in mine] == sorted(r["i"] for r in mine)
    text = path.read_text()
    assert all(json.loads(line) for line in text.splitlines())


def test_torn_file_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n{"b": ')
    with pytest.raises(MarsEvalError, match="incomplete"):
        append_rows(path, [{"c": 3}])
    with pytest.raises(MarsEvalError, match="r.jsonl:2"):
        read_rows(path)


def test_config_hash_is_order_independent():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
