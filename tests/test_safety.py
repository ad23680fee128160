"""Safety (issue 7): no code from a user's file ever runs, the HTML report escapes user text, and parallel
writers never corrupt a results history.

The malicious files hold a pickle whose loading creates a marker file (`Payload.__reduce__` -> `exec`). A first
test proves that the payload really runs when such a file is unpickled the unsafe way; every loader that
accepts a user path (VQ checkpoints, CLIP checkpoints, the CompBench judges, generation bundles, Qwen2
directories, training checkpoints, world judges) must then refuse or ignore the file without running it, and
refuse with a one-line MarsRefError rather than a traceback.
"""

from __future__ import annotations

import builtins
import html.parser
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fixtures_bundle import build_tiny_bundle

from mars_eval.cli.main import main
from mars_eval.compbench import tiny
from mars_eval.generate.runner import generate_folder
from mars_eval.io import atomic_write_jsonl
from mars_eval.prompts import PromptSet
from mars_eval.results import append_rows, read_rows
from mars_ref.errors import MarsRefError

torch.set_num_threads(1)


class Payload:
    """Unpickling this object runs `exec(code)`: here, code that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


def torch_file(path: Path, marker: Path) -> Path:
    """A torch zip checkpoint shaped like a real one ("state_dict" of tensors) with the payload beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}, "extra": Payload(marker)}, path)
    return path


def torch_legacy(path: Path, marker: Path) -> Path:
    """The pre-1.6 torch format (magic number + pickle stream), which torch.load still reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path, _use_new_zipfile_serialization=False)
    return path


def raw_pickle(path: Path, marker: Path) -> Path:
    """A plain pickle stream (what `pickle.dump` writes; a .pkl / .bin in the wild)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=2))
    return path


MAKERS = {"torch-zip": torch_file, "torch-legacy": torch_legacy, "raw-pickle": raw_pickle}


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PAYLOAD_RAN"
    yield m
    assert not m.exists(), "a pickle from a user file was executed"


def test_the_payload_really_runs_when_loaded_unsafely(tmp_path):
    """Control: the files below are live. Loaded the unsafe way they run code (so the other tests mean something)."""
    for name, make in MAKERS.items():
        m = tmp_path / f"ran-{name}"
        f = make(tmp_path / f"evil-{name}.pt", m)
        if name == "raw-pickle":
            pickle.loads(f.read_bytes())
        else:
            torch.load(f, weights_only=False)
        assert m.exists(), name


# ---- VQ checkpoints (mars_ref.vq_formats) -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("loader,suffix", [("load_llamagen_vq", ".pt"), ("load_taming_vq", ".ckpt"),
                                           ("load_any_vq", ".bin")])
def test_vq_loaders_refuse_pickled_code(tmp_path, marker, kind, loader, suffix):
    from mars_ref import vq_formats

    f = MAKERS[kind](tmp_path / f"vq{suffix}", marker)
    with pytest.raises(MarsRefError, match="weights_only") as e:
        getattr(vq_formats, loader)(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


# ---- CLIP checkpoints (clip-score, CompBench non-spatial, world CLIP) ---------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tiny.build_open_clip(tmp_path_factory.mktemp("clip") / "clip")


def _evil_clip_dir(clip_dir: Path, tmp_path: Path, marker: Path, kind: str) -> Path:
    """open_clip's local-dir layout whose only weights file is a pickle (`open_clip_model.bin`)."""
    d = tmp_path / "clip"
    d.mkdir()
    shutil.copy(clip_dir / "open_clip_config.json", d)
    MAKERS[kind](d / "open_clip_model.bin", marker)
    return d


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_clip_score_refuses_a_pickled_checkpoint_file(tmp_path, marker, clip_dir, kind, capsys):
    """`clip-score --clip-ckpt FILE.pt --clip-model CONFIG.json`: open_clip's torch.load with weights_only."""
    cfg = tmp_path / "tiny-clip.json"
    cfg.write_text(json.dumps(json.loads((clip_dir / "open_clip_config.json").read_text())["model_cfg"]))
    f = MAKERS[kind](tmp_path / "clip.pt", marker)
    imgs = _images(tmp_path / "imgs")
    err = _cli_fails(capsys, ["clip-score", str(imgs), "--prompts", "color_val", "--clip-ckpt", str(f),
                              "--clip-model", str(cfg)])
    assert str(f) in err and "refused" in err


def test_clip_score_refuses_a_pickled_local_dir(tmp_path, marker, clip_dir, capsys):
    d = _evil_clip_dir(clip_dir, tmp_path, marker, "torch-zip")
    err = _cli_fails(capsys, ["clip-score", str(_images(tmp_path / "imgs")), "--prompts", "color_val",
                              "--clip-ckpt", str(d)])
    assert str(d) in err and "refused" in err


def test_compbench_clip_judge_and_world_clip_refuse_pickles(tmp_path, marker, clip_dir):
    from mars_eval.compbench.clip_nonspatial import ClipJudge
    from mars_eval.world_clip.train import MARKER, load_world_clip

    d = _evil_clip_dir(clip_dir, tmp_path, marker, "raw-pickle")
    with pytest.raises(MarsRefError, match="refused"):
        ClipJudge(d)
    (d / MARKER).write_text("{}")
    with pytest.raises(MarsRefError, match="refused"):
        load_world_clip(d)


# ---- CompBench judges (transformers directories) -------------------------------------------------------------------


JUDGES = {
    "blip": (lambda d: tiny.build_blip_vqa(d), "mars_eval.compbench.blip_vqa:BlipVqaJudge"),
    "detr": (lambda d: tiny.build_detr(d, ["dog", "cat"]), "mars_eval.compbench.detector:HFDetector"),
    "owlvit": (lambda d: tiny.build_owlvit(d), "mars_eval.compbench.detector:HFDetector"),
    "dpt": (lambda d: tiny.build_dpt(d), "mars_eval.compbench.depth3d:DepthJudge"),
}


@pytest.mark.parametrize("judge", sorted(JUDGES))
def test_compbench_judges_refuse_pickled_weights(tmp_path, marker, judge):
    """A judge directory whose weights are `pytorch_model.bin` holding the payload (transformers' torch.load
    runs with weights_only): a one-line error naming the directory, no code run."""
    import importlib

    build, target = JUDGES[judge]
    d = build(tmp_path / judge)
    for f in d.glob("*.safetensors"):
        f.unlink()
    torch_file(d / "pytorch_model.bin", marker)
    mod, cls = target.split(":")
    with pytest.raises(MarsRefError) as e:
        getattr(importlib.import_module(mod), cls)(d)
    assert str(d) in str(e.value) and "refused" in str(e.value) and "\n" not in str(e.value)


# ---- our own checkpoint directories ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "ckpt")


def test_bundle_ignores_pickles_lying_beside_its_weights(tmp_path, marker, bundle):
    """Files a real-world export might carry (pytorch_model.bin, *.pt, *.pkl) are never opened."""
    from mars_eval.bundle import Bundle

    ckpt = tmp_path / "ckpt"
    shutil.copytree(bundle, ckpt)
    for rel in ("pytorch_model.bin", "mars/pytorch_model.bin", "mars/model.pt", "vq/model.ckpt",
                "tokenizer/tokenizer.pkl", "hires.pt"):
        MAKERS["torch-zip" if rel.endswith((".bin", ".pt")) else "raw-pickle"](ckpt / rel, marker)
    b = Bundle.load(ckpt)
    assert b.model is not None and b.vq is not None


@pytest.mark.parametrize("rel", ["mars/model.safetensors", "vq/model.safetensors", "hires/model.safetensors"])
def test_bundle_refuses_a_pickle_named_safetensors(tmp_path, marker, bundle, rel, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(bundle, ckpt)
    if rel.startswith("hires"):
        shutil.copytree(ckpt / "mars", ckpt / "hires")
    torch_file(ckpt / rel, marker)
    err = _cli_fails(capsys, ["generate", "--ckpt", str(ckpt), "--prompts", "color_val", "--limit", "1",
                              "--out", str(tmp_path / "out")])
    assert str(ckpt / rel) in err


def test_tokenizer_remote_code_is_not_imported(tmp_path, marker, bundle):
    """A tokenizer_config.json `auto_map` pointing at a Python file in the directory: never imported (no
    trust_remote_code), the standard fast tokenizer loads instead."""
    from mars_ref.text_tokenizer import load_text_tokenizer

    tok = tmp_path / "tok"
    shutil.copytree(bundle / "tokenizer", tok)
    cfg = json.loads((tok / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": ["evil_tok.EvilTokenizer", "evil_tok.EvilTokenizer"]}
    (tok / "tokenizer_config.json").write_text(json.dumps(cfg))
    (tok / "evil_tok.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                     "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n")
    assert len(load_text_tokenizer(tok)) > 0


def test_qwen2_directory_with_only_a_pickle_is_refused(tmp_path, marker):
    from mars_ref.model import MarsModel

    d = tmp_path / "qwen"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64, "vocab_size": 300,
        "max_position_embeddings": 64}))
    torch_file(d / "pytorch_model.bin", marker)
    with pytest.raises(MarsRefError, match="no model.safetensors"):
        MarsModel.from_qwen2(d, codebook_size=64)


def test_training_checkpoint_and_world_judges_refuse_pickles(tmp_path, marker):
    from mars_eval.judges.world_judges import MARKER, WEIGHTS, WorldJudges
    from mars_eval.train.checkpoint import read_tensors, read_tree

    step = tmp_path / "step_000002"
    torch_file(step / "optimizer.safetensors", marker)
    (step / "optimizer.json").write_text(json.dumps({"__tensor__": "t"}))
    with pytest.raises(MarsRefError):
        read_tensors(step / "optimizer.safetensors")
    with pytest.raises(MarsRefError):
        read_tree(step, "optimizer")
    judges = tmp_path / "judges"
    torch_file(judges / WEIGHTS, marker)
    (judges / MARKER).write_text(json.dumps({"format": 1, "detector": {}}))
    with pytest.raises(MarsRefError):
        WorldJudges.load(judges)


# ---- the HTML report escapes user text ----------------------------------------------------------------------------


EVIL = ["<script>alert('prompt')</script>", "\"><img src=x onerror=alert(1)>", "</div><iframe src=javascript:1>",
        "<style>body{display:none}</style> a red cube", "&amp; &lt;b&gt; '\"` ${x} {{y}}"]


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_escapes_prompts_labels_titles_and_tables(tmp_path, bundle):
    run = tmp_path / "run"
    generate_folder(bundle, PromptSet.from_text("\n".join(EVIL), "evil", "test"), run / "imgs")
    rows = [{"kind": "metric", "table": EVIL[2], "label": EVIL[0], "metric": EVIL[1], "value": 1.0},
            {"kind": "samples", "label": EVIL[3], "images_dir": "imgs"}]
    atomic_write_jsonl(run / "results.jsonl", rows)
    assert main(["report", str(run), "--out", str(tmp_path / "out"), "--title", EVIL[0]]) == 0
    page_text = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(page_text)
    allowed = {"html", "head", "meta", "title", "style", "body", "h1", "h3", "table", "tr", "th", "td", "p",
               "figure", "figcaption", "img", "div", "br", "b"}
    assert set(page.tags) <= allowed, set(page.tags) - allowed
    assert page.tags.count("style") == 1 and page.tags.count("img") == 1 + len(EVIL)  # one chart + the grid
    assert not [a for a, _ in page.attrs if a.startswith("on")]
    assert all(v.startswith("data:image/png;base64,") for a, v in page.attrs if a == "src")
    text = "".join(page.text)
    for s in EVIL:  # every text comes back intact as text (escaped, not dropped)
        assert s in text, s


# ---- parallel writers to a results history ------------------------------------------------------------------------


WRITER = """
import sys, time
from mars_eval.results import append_rows
path, wid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    pad = ("x" * 70_000) if i % 10 == 3 else "\u2028é中" * (i % 7)
    append_rows(path, [{"writer": wid, "i": i, "part": 0, "pad": pad}, {"writer": wid, "i": i, "part": 1}])
    if wid < 0:
        time.sleep(0.005)
"""


def test_parallel_writer_processes_never_corrupt_the_history(tmp_path):
    """Four interpreters append 30 pairs each while a fifth is SIGKILLed mid-run and this process reads the
    file the whole time: every read parses, every pair lands whole and adjacent, each writer's rows in order."""
    path = tmp_path / "history.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start(wid: int, n: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(wid), str(n)], env=env,
                                stderr=subprocess.PIPE)
    writers = [start(w, 30) for w in range(4)]
    victim = start(-1, 10_000)
    reads, killed = 0, False
    deadline = time.monotonic() + 240
    while any(p.poll() is None for p in writers) and time.monotonic() < deadline:
        rows = read_rows(path) if path.exists() else []
        reads += 1
        if not killed and sum(r["writer"] == -1 for r in rows) >= 20:
            victim.send_signal(signal.SIGKILL)
            killed = True
    for p in writers:
        assert p.wait(timeout=60) == 0, p.stderr.read().decode()[-2000:]
    if not killed:
        victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    rows = read_rows(path)
    assert reads > 5
    for w in range(4):
        mine = [(r["i"], r["part"]) for r in rows if r["writer"] == w]
        assert mine == [(i, p) for i in range(30) for p in (0, 1)]
    for k in range(0, len(rows), 2):  # whole pairs, adjacent, never interleaved
        assert (rows[k]["writer"], rows[k]["i"], rows[k]["part"]) == (rows[k + 1]["writer"], rows[k + 1]["i"], 0)
        assert rows[k + 1]["part"] == 1
    assert sum(r["writer"] == -1 for r in rows) >= 2  # the victim wrote whole pairs before it died (timing varies)
    append_rows(path, [{"writer": 9, "i": 0, "part": 0}])  # the file is still appendable after the kill
    assert read_rows(path)[-1]["writer"] == 9


# ---- helpers --------------------------------------------------------------------------------------------------


def _images(d: Path) -> Path:
    import numpy as np
    from PIL import Image

    d.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(d / f"{i}_0.png")
    return d


def _cli_fails(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err
