"""World kits: manifest and hashes, `kit build` / `kit verify`, presets that name a kit, `--from-scratch`.

Fast tests use kits of placeholder files (nothing loads their weights); the slow ones build the `ci` preset's
kit once (module fixture) and train Stage I from it.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

from mars_eval.cli.main import main
from mars_eval.errors import MarsEvalError
from mars_eval.kit.manifest import (
    PART_TABLES,
    PARTS,
    KitManifest,
    KitPart,
    hash_files,
    kit_tables,
    part_digest,
)
from mars_eval.recipe.pipeline import Artifacts, Preset

CI_TOML = resources.files("mars_eval.recipe").joinpath("presets/ci.toml").read_text(encoding="utf-8")


def fake_kit(root: Path, tables: dict | None = None, name: str = "fake") -> Path:
    """A kit of placeholder files whose manifest says it was built from `tables` (default: the ci preset's)."""
    want = kit_tables(tables or Preset.load("ci").tables)
    manifest = KitManifest(name, "ci", want, {"seconds": 1.0, "images": 10})
    for part in PARTS:
        (root / part / "sub").mkdir(parents=True)
        (root / part / "weights.bin").write_bytes(bytes(range(256)) * 4 + part.encode())
        (root / part / "sub" / "config.json").write_text(json.dumps({"part": part}))
        files = hash_files(root, part)
        manifest = manifest.with_part(KitPart(
            name=part, tables={t: want[t] for t in PART_TABLES[part]}, files=files, sha256=part_digest(files),
            inputs={}, seconds=1.0, figures={"x": 1.0}, checks={"y": 2.0}, commit="abc", command="test",
            built="2025-01-01T00:00:00"))
    manifest.write(root)
    return root


def kit_preset(path: Path, kit: Path, text: str = CI_TOML) -> Preset:
    """A preset (default: ci) with a [kit] table pointing at `kit` (relative to the preset file), at `path`."""
    path.write_text(text + f'\n[kit]\npath = "{kit.name}"\n')
    return Preset.load(str(path))


def flip_byte(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def one_line_error(capsys) -> str:
    """The error line of a failed command; only progress bars (stopped where it failed) may come before it."""
    err = capsys.readouterr().err
    *bars, line = err.splitlines()
    assert "Traceback" not in err and line.startswith("error: ") and all("━" in x for x in bars), err
    return line


# ---- manifest and verify (placeholder kits) ---------------------------------------------------------------------
def test_manifest_round_trips_and_names_every_file(tmp_path):
    kit = fake_kit(tmp_path / "kit")
    m = KitManifest.read(kit)
    assert KitManifest.from_dict(json.loads((kit / "manifest.json").read_text())) == m
    assert set(m.parts) == set(PARTS) and m.tables["world"]["format"].startswith("mars-world/")
    assert [f.path for f in m.parts["vq"].files] == ["vq/sub/config.json", "vq/weights.bin"]
    assert m.parts["llm"].tables.keys() == {"world", "tokenizer", "model", "stage0"}


def test_verify_quick_passes_then_names_the_first_bad_file(tmp_path, capsys):
    kit = fake_kit(tmp_path / "kit")
    assert main(["kit", "verify", str(kit), "--quick", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sha256"] == "ok" and out["files"] == 2 * len(PARTS)
    flip_byte(kit / "vq" / "weights.bin")
    with pytest.raises(SystemExit) as e:
        main(["kit", "verify", str(kit), "--quick"])
    assert e.value.code == 1
    assert "vq/weights.bin does not match its sha256" in one_line_error(capsys)


def test_verify_reports_missing_and_unlisted_files(tmp_path, capsys):
    kit = fake_kit(tmp_path / "kit")
    (kit / "clip" / "extra.txt").write_text("x")
    with pytest.raises(SystemExit):
        main(["kit", "verify", str(kit), "--quick"])
    assert "clip/extra.txt is not in the manifest" in one_line_error(capsys)
    (kit / "clip" / "extra.txt").unlink()
    (kit / "judges" / "weights.bin").unlink()
    with pytest.raises(SystemExit):
        main(["kit", "verify", str(kit), "--quick"])
    assert "judges/weights.bin is missing" in one_line_error(capsys)


def test_verify_of_an_unknown_kit_lists_the_known_ones(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["kit", "verify", "no-such-kit", "--quick"])
    assert "unknown kit 'no-such-kit'; known kits:" in one_line_error(capsys)


# ---- presets that name a kit ------------------------------------------------------------------------------------
def test_kit_table_is_validated_when_the_preset_loads(tmp_path):
    kit = fake_kit(tmp_path / "kit")
    p = kit_preset(tmp_path / "p.toml", kit)
    assert p.tables["kit"] == {"path": str(kit.absolute())}  # resolved against the preset file's folder
    for table, match in (('name = "nope"', "unknown kit 'nope'; known kits:"),
                         ('path = "missing"', "not a kit directory"),
                         ('name = "a"\npath = "b"', "exactly one of"),
                         ("size = 3", "exactly one of")):
        (tmp_path / "bad.toml").write_text(CI_TOML + f"\n[kit]\n{table}\n")
        with pytest.raises(MarsEvalError, match=match):
            Preset.load(str(tmp_path / "bad.toml"))


def test_artifacts_take_every_part_from_a_matching_kit(tmp_path):
    kit = fake_kit(tmp_path / "kit")
    cache = tmp_path / "cache"
    arts = Artifacts(kit_preset(tmp_path / "p.toml", kit), cache)
    assert arts.tokenizer_dir() == kit / "tokenizer" and arts.vq_dir() == kit / "vq"
    assert arts.clip_dir() == kit / "clip" and arts.judges_dir() == kit / "judges"
    assert arts.stage("0", None) == kit / "llm"
    assert not cache.exists()  # nothing was built
    sha = KitManifest.read(kit).parts["vq"].sha256
    assert arts._ident(kit / "vq") == f"kit:fake/vq@{sha}"  # what later stages' cache keys hold
    assert arts._ident(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
    scratch = Artifacts(arts.preset, cache, from_scratch=True)
    assert scratch.kit() is None and scratch._ident(kit / "vq") == str(kit / "vq")
    info = {"preset": "p", "tables": arts.preset.tables, "cache": str(cache)}
    assert Artifacts.from_recipe_info(info).kit().root == kit  # a bundle's recipe finds the kit again
    assert Artifacts.from_recipe_info({**info, "from_scratch": True}).kit() is None


def test_a_changed_kit_changes_the_identity_later_stages_are_keyed_by(tmp_path):
    kit = fake_kit(tmp_path / "kit")
    before = Artifacts(kit_preset(tmp_path / "p.toml", kit), tmp_path / "c")._ident(kit / "llm")
    shutil.rmtree(kit)
    fake_kit(kit)
    flip_byte(kit / "llm" / "weights.bin")
    m = KitManifest.read(kit)
    files = hash_files(kit, "llm")
    part = m.parts["llm"]
    m.with_part(KitPart(**{**part.__dict__, "files": files, "sha256": part_digest(files)})).write(kit)
    after = Artifacts(Preset.load(str(tmp_path / "p.toml")), tmp_path / "c")._ident(kit / "llm")
    assert before != after and after.startswith("kit:fake/llm@")


def test_a_damaged_kit_fails_when_its_part_is_used(tmp_path):
    kit = fake_kit(tmp_path / "kit")
    flip_byte(kit / "tokenizer" / "weights.bin")
    arts = Artifacts(kit_preset(tmp_path / "p.toml", kit), tmp_path / "cache")
    assert arts.vq_dir() == kit / "vq"  # each part is checked when it is first used
    with pytest.raises(MarsEvalError, match="tokenizer/weights.bin does not match its sha256"):
        arts.tokenizer_dir()


def test_a_kit_built_from_other_tables_is_a_one_line_error(tmp_path, capsys):
    kit = fake_kit(tmp_path / "kit")
    p = kit_preset(tmp_path / "p.toml", kit, CI_TOML.replace('"world-f4"\nsteps = 40', '"world-f4"\nsteps = 41'))
    with pytest.raises(MarsEvalError, match=r"part vq of kit fake .*\[vq\] steps: kit 40, this run 41.*--from-scratch"):
        Artifacts(p, tmp_path / "cache").world()
    assert not (tmp_path / "cache").exists()
    with pytest.raises(SystemExit) as e:
        main(["train", "stage", "I", "--preset", str(tmp_path / "p.toml"), "--cache", str(tmp_path / "cache")])
    assert e.value.code == 1 and "[vq] steps" in one_line_error(capsys)


def test_a_kit_serves_every_value_of_the_experts_own_model_fields(tmp_path):
    """[model] caption_kv shapes the visual expert, not the LLM: the same kit (and Stage 0) serve both values."""
    kit = fake_kit(tmp_path / "kit")
    text = CI_TOML.replace("[model]\n", '[model]\ncaption_kv = "expert"\n', 1)
    assert 'caption_kv = "expert"' in text
    arts = Artifacts(kit_preset(tmp_path / "p.toml", kit, text), tmp_path / "cache")
    assert arts.stage("0", None) == kit / "llm"  # the kit check passed
    paper = Artifacts(kit_preset(tmp_path / "q.toml", kit), tmp_path / "cache")
    for a in (arts, paper):
        a.world = lambda: tmp_path / "world"  # keys name the world folder; nothing is built
    key = {a.preset.tables["model"].get("caption_kv", "text"):
           (a.stage_key("0", a.preset.train_config("stage0", seed=1), None, True),
            a.stage_key("I", a.preset.train_config("stageI", seed=0), kit / "llm", True)) for a in (arts, paper)}
    assert key["expert"][0] == key["text"][0]  # Stage 0 (seed 1, no kit LLM): one LLM for both
    assert key["expert"][1] != key["text"][1]  # Stage I: two models


def test_a_kit_of_another_world_format_is_refused(tmp_path):
    tables = Preset.load("ci").tables
    kit = fake_kit(tmp_path / "kit", tables)
    m = KitManifest.read(kit)
    old = m.parts["tokenizer"]
    tabs = {**old.tables, "world": {**old.tables["world"], "format": "mars-world/0"}}
    m.with_part(KitPart(**{**old.__dict__, "tables": tabs})).write(kit)
    with pytest.raises(MarsEvalError, match=r"\[world\] format: kit 'mars-world/0'"):
        Artifacts(kit_preset(tmp_path / "p.toml", kit), tmp_path / "cache").tokenizer_dir()


# ---- kit build: resume (builders replaced by placeholders) -------------------------------------------------------
def test_build_resumes_and_rebuilds_only_what_changed(tmp_path, monkeypatch):
    from mars_eval.kit import build as kb

    calls, content = [], {p: p.encode() * 50 for p in PARTS}

    def builder(part):
        def fn(arts):
            calls.append(part)
            d = tmp_path / "cache" / part / part
            d.mkdir(parents=True, exist_ok=True)
            (d / "w.bin").write_bytes(content[part])
            return d
        return fn

    monkeypatch.setattr(kb, "BUILDERS", {p: builder(p) for p in PARTS})
    monkeypatch.setattr(Artifacts, "world", lambda self: tmp_path / "world" / "world")
    monkeypatch.setattr(kb, "measure", lambda part, kit, world: {"check": 1.0})
    monkeypatch.setattr(kb, "recorded", lambda part, done, d: (2.0, {"figure": 3.0}))
    out = tmp_path / "kit"

    def build(preset="ci"):
        calls.clear()
        return kb.build_kit(Preset.load(preset), out, tmp_path / "cache", command="cmd", say=lambda s: None)

    m = build()
    assert calls == list(PARTS) and (out / "README.md").is_file()
    assert m.parts["judges"].inputs == {"vq": m.parts["vq"].sha256}
    assert KitManifest.read(out) == m
    build()
    assert calls == []  # every part kept: same tables, inputs and files
    content["vq"] = b"other weights"
    flip_byte(out / "vq" / "w.bin", at=0)
    build()
    assert calls == ["vq", "judges"]  # the judges were trained on the old VQ
    (tmp_path / "p.toml").write_text(CI_TOML.replace("[clip]\nsteps = 20", "[clip]\nsteps = 21"))
    build(str(tmp_path / "p.toml"))
    assert calls == ["clip"]


# ---- the ci preset's kit (slow: trains every part once) ---------------------------------------------------------
@pytest.fixture(scope="module")
def ci_kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("ci-kit")
    kit, cache = root / "kit", root / "cache"
    assert main(["kit", "build", "--preset", "ci", "--out", str(kit), "--cache", str(cache), "--json"]) == 0
    return kit, cache


@pytest.mark.slow
def test_ci_kit_builds_verifies_and_resumes(ci_kit, capsys):
    kit, cache = ci_kit
    m = KitManifest.read(kit)
    assert m.tables == kit_tables(Preset.load("ci").tables) and set(m.parts) == set(PARTS)
    assert m.parts["vq"].figures["held_out/psnr"] > 0 and "final_loss" in m.parts["llm"].figures
    assert all(m.parts[p].seconds is not None and m.parts[p].command.startswith("mars-eval kit build")
               for p in PARTS)
    assert "## Parts" in (kit / "README.md").read_text()
    assert not list(kit.rglob("train_state*"))  # finished parts, no optimizer state
    capsys.readouterr()
    assert main(["kit", "verify", str(kit), "--cache", str(cache), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    checks = {(c["part"], c["figure"]): c for c in res["checks"]}
    assert {p for p, _ in checks} == set(PARTS)
    assert checks[("vq", "held_out/psnr")]["delta"] == pytest.approx(0.0, abs=1e-3)
    before = (kit / "manifest.json").read_text()
    assert main(["kit", "build", "--preset", "ci", "--out", str(kit), "--cache", str(cache), "--json"]) == 0
    assert (kit / "manifest.json").read_text() == before  # every part kept


@pytest.mark.slow
def test_ci_kit_with_a_flipped_byte_fails_verify(ci_kit, tmp_path, capsys):
    kit = shutil.copytree(ci_kit[0], tmp_path / "kit")
    flip_byte(kit / "vq" / "model.safetensors", at=4000)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["kit", "verify", str(kit), "--quick"])
    assert e.value.code == 1 and "vq/model.safetensors does not match its sha256" in one_line_error(capsys)


@pytest.mark.slow
def test_stage_one_trains_from_the_ci_kit_without_rebuilding_its_parts(ci_kit, tmp_path, capsys):
    kit, build_cache = ci_kit
    run = tmp_path / "run"
    world = next(build_cache.glob("world-*"))
    shutil.copytree(world, run / world.name)  # the world is rebuilt per run; copying it saves the test 30 s
    preset = kit_preset(kit.parent / "ci-kit.toml", kit)
    capsys.readouterr()
    assert main(["train", "stage", "I", "--preset", str(kit.parent / "ci-kit.toml"), "--cache", str(run),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stage_0"] == str(kit / "llm")
    kinds = {d.name.split("-")[0] for d in run.iterdir() if d.is_dir()}
    assert kinds == {"world", "stageI"}  # no tokenizer-, vq-, stage0-, clip- or judges- folder
    # --from-scratch ignores the kit: on the kit's own build cache it finds the parts it built, trains Stage I
    before = {d.name for d in build_cache.iterdir()}
    assert main(["train", "stage", "I", "--preset", str(kit.parent / "ci-kit.toml"), "--cache", str(build_cache),
                 "--from-scratch", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stage_0"].startswith(str(build_cache))
    new = {d.name.split("-")[0] for d in build_cache.iterdir() if d.name not in before}
    assert new <= {"stageI", "corpus"}
    assert preset.tables["kit"]["path"] == str(kit)
