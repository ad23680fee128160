"""The bad-input corpus (issue 7): every case builds one bad input under tmp_path, runs the CLI on it and checks
the documented outcome - exit code 1 with one line `error: ...` that names the offending file, or exit code 0
with the documented handling (checked against an independent expectation) - and that nothing was written
outside the command's output paths.

Commands run in-process through `mars_eval.cli.main.main(argv)`, where an exception escaping `main` is a
traceback and fails the case. The cases that need a real exit status, another user or a resource limit
(an unwritable directory as a non-root user, a full disk simulated with RLIMIT_FSIZE) run the console script
in a subprocess. The fid cases share one Inception network (loading it is the slow part); images are small.

    pytest tests/test_bad_inputs.py            # the corpus; `-k fid_` etc. for one family
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from fixtures_bundle import build_tiny_bundle, tiny_model
from PIL import Image
from safetensors.torch import load_file, save_file

from mars_eval.cli.main import main
from mars_eval.generate.folder import JOB, MANIFEST, read_manifest
from mars_eval.generate.runner import generate_folder
from mars_eval.prompts import PromptSet
from mars_ref.vq import VQModel, vq_preset
from mars_ref.vq_formats import save_vq

torch.set_num_threads(1)

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
XS_PRESET = Path(__file__).resolve().parents[1] / "mars_eval" / "recipe" / "presets" / "xs.toml"


# ---- shared inputs (built once) ---------------------------------------------------------------------------------


@dataclass
class Env:
    tmp: Path  # this case's folder: the bad input and the outputs live here
    ckpt: Path  # a valid tiny generation bundle (read only; copy it before damaging it)
    clip: Path  # a valid tiny open_clip model in open_clip's local-dir format


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    ckpt = build_tiny_bundle(root / "ckpt")
    clip = root / "clip"
    clip.mkdir()
    (clip / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    torch.manual_seed(0)
    save_file(open_clip.create_model(f"local-dir:{clip}").state_dict(), str(clip / "open_clip_model.safetensors"))
    return ckpt, clip


@pytest.fixture(scope="module")
def inception():
    """One Inception network for every fid case: `fid` builds its extractor through this module attribute."""
    from mars_eval.metrics import inception as mod

    net = mod.InceptionExtractor()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mod, "InceptionExtractor", lambda config=None, weights=None: net)
        yield net


# ---- the case table -------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One command on one bad input and its expected outcome."""

    argv: list
    error: tuple[str, ...] | None = None  # expected failure: fragments of the one-line error (the file it names)
    check: Callable[[str], None] | None = None  # expected success: checks stdout (and the files) when given
    writes: tuple[Path, ...] = ()  # the only paths under which the command may create or change files
    subprocess: bool = False  # run the console script in a subprocess (exit status, resource limits, user)
    preexec: Callable[[], None] | None = None
    env: dict = field(default_factory=dict)


CASES: dict[str, Callable[[Env], Run]] = {}


def case(fn: Callable[[Env], Run]) -> Callable[[Env], Run]:
    CASES[fn.__name__] = fn
    return fn


# ---- helpers that build inputs ----------------------------------------------------------------------------------


def rgb(seed: int, h: int = 16, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def folder(path: Path, n: int = 3, seed: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rgb(seed * 100 + i)).save(path / f"{i:03d}.png")
    return path


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): `rows` = filter byte 0 + samples per row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def fid_argv(env: Env, a: Path, b: Path) -> list:
    return ["fid", a, b, "--json", "--bootstrap", "0", "--no-fid-inf", "--cache-dir", env.tmp / "out" / "cache"]


def fid_fails(env: Env, bad_name: str, content: bytes, *fragments: str) -> Run:
    """Folder B holds two good images and one bad file: the error names the bad file."""
    a, b = folder(env.tmp / "a", 2, seed=1), folder(env.tmp / "b", 2, seed=2)
    (b / bad_name).write_bytes(content)
    return Run(fid_argv(env, a, b), error=(str(b / bad_name), *fragments), writes=(env.tmp / "out",))


def fid_same_pixels(env: Env, write_special: Callable[[Path], None], expected: np.ndarray) -> Run:
    """Documented decoding: A = [special file, x], B = [the expected 8-bit RGB pixels, x]. Equal decoded
    pixels give equal Inception features, so FID(A, B) is 0 up to float noise; any other decoding is not."""
    a, b = env.tmp / "a", env.tmp / "b"
    a.mkdir()
    b.mkdir()
    write_special(a)
    Image.fromarray(expected).save(b / "0.png")
    for d in (a, b):
        Image.fromarray(rgb(7)).save(d / "1.png")
    assert sorted(p.stem for p in a.iterdir()) == ["0", "1"]

    def check(out: str) -> None:
        r = json.loads(out)
        assert (r["n_a"], r["n_b"]) == (2, 2)
        assert abs(r["fid"]) < 1e-6, r["fid"]
    return Run(fid_argv(env, a, b), check=check, writes=(env.tmp / "out",))


def bad_bundle(env: Env, damage: Callable[[Path], None]) -> Path:
    ckpt = env.tmp / "ckpt"
    shutil.copytree(env.ckpt, ckpt)
    damage(ckpt)
    return ckpt


def generate_argv(env: Env, ckpt: Path, prompts) -> list:
    return ["generate", "--ckpt", ckpt, "--prompts", prompts, "--out", env.tmp / "out", "--json"]


def generate_fails(env: Env, damage: Callable[[Path], None], *fragments: str) -> Run:
    ckpt = bad_bundle(env, damage)
    prompts = write(env.tmp / "p.txt", "a red cube\n")
    return Run(generate_argv(env, ckpt, prompts), error=fragments or (str(ckpt),))


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def prompts_fail(env: Env, name: str, content: str | bytes, *fragments: str) -> Run:
    p = write(env.tmp / name, content)
    return Run(generate_argv(env, env.ckpt, p), error=(str(p), *fragments))


def prompts_ok(env: Env, name: str, content: str | bytes, expected: list[str]) -> Run:
    """Documented prompt-file handling: the manifest lists exactly the expected prompts, in order, each with
    an image named by its index (never by its text)."""
    p = write(env.tmp / name, content)
    out = env.tmp / "out"

    def check(stdout: str) -> None:
        assert json.loads(stdout)["images"] == len(expected)
        rows = read_manifest(out)
        assert [r["prompt"] for r in rows] == expected
        assert [r["file"] for r in rows] == [f"{i:05d}_000.png" for i in range(len(expected))]
        assert sorted(p.name for p in out.glob("*.png")) == [r["file"] for r in rows]
    return Run(generate_argv(env, env.ckpt, p), check=check, writes=(out,))


def results_file(env: Env, rows: list) -> Path:
    run = env.tmp / "run"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    write(run / "results.jsonl", "".join(line + "\n" for line in lines))
    return run


def report_fails(env: Env, rows: list, *fragments: str) -> Run:
    run = results_file(env, rows)
    return Run(["report", run, "--out", env.tmp / "out"], error=(str(run / "results.jsonl"), *fragments),
               writes=(env.tmp / "out",))


def preset_fails(env: Env, text: str | bytes, *fragments: str) -> Run:
    p = write(env.tmp / "preset.toml", text)
    return Run(["train", "stage", "I", "--preset", p, "--cache", env.tmp / "cache"], error=(str(p), *fragments),
               writes=(env.tmp / "cache",))


METRIC = {"kind": "metric", "table": "T", "label": "a", "metric": "fid", "value": 1.0}


# ---- image folders (fid, clip-score) ----------------------------------------------------------------------------


@case
def fid_corrupt_png(env):
    return fid_fails(env, "bad.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, "corrupt")


@case
def fid_truncated_png(env):
    data = png_bytes(rgb(3, 64, 64))
    return fid_fails(env, "cut.png", data[: len(data) // 2], "truncated")


@case
def fid_bad_crc_png(env):
    data = bytearray(png_bytes(rgb(3)))
    data[29] ^= 0xFF  # the IHDR checksum
    return fid_fails(env, "crc.png", bytes(data))


@case
def fid_zero_byte_png(env):
    return fid_fails(env, "empty.png", b"", "empty file")


@case
def fid_text_named_png(env):
    return fid_fails(env, "notes.png", b"these are my notes, not an image\n", "not a readable image")


@case
def fid_truncated_jpeg(env):
    buf = io.BytesIO()
    Image.fromarray(rgb(4, 64, 64)).save(buf, format="JPEG")
    return fid_fails(env, "cut.jpg", buf.getvalue()[: len(buf.getvalue()) // 2], "truncated")


@case
def fid_jpeg_header_only(env):
    return fid_fails(env, "head.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 40)


@case
def fid_decompression_bomb(env):
    """A 60-byte PNG that claims 100000 x 100000 pixels: refused before any pixel is decoded."""
    data = bytearray(png_bytes(rgb(5, 1, 1)))
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return fid_fails(env, "bomb.png", bytes(data), "too large")


@case
def fid_int32_image(env):
    buf = io.BytesIO()
    Image.new("I", (8, 8), 70_000).save(buf, format="TIFF")
    return fid_fails(env, "int32.tif", buf.getvalue(), "32-bit integer")


@case
def fid_float_image(env):
    buf = io.BytesIO()
    Image.new("F", (8, 8), 0.5).save(buf, format="TIFF")
    return fid_fails(env, "float.tif", buf.getvalue(), "floating-point")


@case
def fid_one_image(env):
    a, b = folder(env.tmp / "a", 3), folder(env.tmp / "b", 1, seed=2)
    return Run(fid_argv(env, a, b), error=(str(b), "found 1 image(s), need at least 2"))


@case
def fid_no_images_only_other_files(env):
    a, b = folder(env.tmp / "a", 3), env.tmp / "b"
    write(b / "notes.txt", "x")
    write(b / "manifest.jsonl", "{}\n")
    return Run(fid_argv(env, a, b), error=(str(b), "found 0 image(s)"))


@case
def fid_missing_folder(env):
    a = folder(env.tmp / "a", 3)
    return Run(fid_argv(env, a, env.tmp / "nowhere"), error=("image folder not found", str(env.tmp / "nowhere")))


@case
def fid_folder_is_a_file(env):
    a = folder(env.tmp / "a", 3)
    f = write(env.tmp / "b.png", png_bytes(rgb(1)))
    return Run(fid_argv(env, a, f), error=("not a directory", str(f)))


@case
def fid_rgba(env):
    """Alpha is dropped (clean-fid / torch-fidelity behaviour), not composited."""
    px = rgb(11)
    alpha = np.random.default_rng(12).integers(0, 256, (16, 16, 1), dtype=np.uint8)
    return fid_same_pixels(env, lambda d: Image.fromarray(np.concatenate([px, alpha], 2), "RGBA").save(d / "0.png"),
                           px)


@case
def fid_gray_alpha(env):
    g = rgb(13)[:, :, 0]
    la = np.stack([g, 255 - g], axis=2)
    return fid_same_pixels(env, lambda d: Image.fromarray(la, "LA").save(d / "0.png"), np.repeat(g[:, :, None], 3, 2))


@case
def fid_grayscale(env):
    g = rgb(14)[:, :, 0]
    return fid_same_pixels(env, lambda d: Image.fromarray(g, "L").save(d / "0.png"), np.repeat(g[:, :, None], 3, 2))


@case
def fid_one_bit(env):
    bits = rgb(15)[:, :, 0] > 127
    expected = np.repeat(np.where(bits, 255, 0).astype(np.uint8)[:, :, None], 3, 2)
    return fid_same_pixels(env, lambda d: Image.fromarray(bits).convert("1").save(d / "0.png"), expected)


@case
def fid_palette_with_transparency(env):
    palette = rgb(16, 4, 1).reshape(-1)  # 4 colours
    idx = np.random.default_rng(17).integers(0, 4, (16, 16), dtype=np.uint8)

    def write_p(d: Path) -> None:
        im = Image.fromarray(idx, "P")
        im.putpalette(palette.tolist())
        im.save(d / "0.png", transparency=2)
    return fid_same_pixels(env, write_p, palette.reshape(4, 3)[idx])


@case
def fid_gray_16bit(env):
    """16-bit grey is scaled to 8 bits as round(v / 257) (Pillow's convert would saturate it to white)."""
    v = np.random.default_rng(18).integers(0, 65536, (16, 16), dtype=np.uint16)
    expected = np.clip(np.rint(v / 257.0), 0, 255).astype(np.uint8)
    return fid_same_pixels(env, lambda d: Image.fromarray(v).save(d / "0.png"), np.repeat(expected[:, :, None], 3, 2))


@case
def fid_rgb_16bit(env):
    """16-bit RGB PNG: Pillow keeps the high byte of every sample."""
    v = np.random.default_rng(19).integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    rows = b"".join(b"\x00" + v[y].astype(">u2").tobytes() for y in range(16))
    return fid_same_pixels(env, lambda d: write(d / "0.png", raw_png(16, 16, 16, 2, rows)),
                           (v >> 8).astype(np.uint8))


@case
def fid_cmyk_tiff(env):
    px = rgb(20)
    cmyk = Image.fromarray(px).convert("CMYK")
    return fid_same_pixels(env, lambda d: cmyk.save(d / "0.tif"), np.asarray(cmyk.convert("RGB")))


@case
def fid_multi_frame_tiff(env):
    """Multi-frame files: the first frame."""
    f0, f1 = rgb(21), rgb(22)
    return fid_same_pixels(env, lambda d: Image.fromarray(f0).save(
        d / "0.tiff", save_all=True, append_images=[Image.fromarray(f1)]), f0)


@case
def fid_exif_orientation_not_applied(env):
    px = rgb(23, 8, 16)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    return fid_same_pixels(env, lambda d: Image.fromarray(px).save(d / "0.png", exif=exif), px)


@case
def fid_other_files_hidden_files_and_subfolders_are_skipped(env):
    """Documented listing: non-image files are ignored and counted, hidden files and sub-folders skipped."""
    a, b = folder(env.tmp / "a", 2, seed=1), folder(env.tmp / "b", 2, seed=2)
    write(a / "manifest.jsonl", "{}\n")
    write(a / "notes.txt", "notes")
    write(a / ".broken.png", b"not an image")
    folder(a / "sub", 2, seed=3)
    (a / "000.png").rename(a / "000.PNG")  # extensions are case-insensitive

    def check(out: str) -> None:
        r = json.loads(out)
        assert (r["n_a"], r["n_b"], r["ignored_files_a"], r["ignored_files_b"]) == (2, 2, 2, 0)
    return Run(fid_argv(env, a, b), check=check, writes=(env.tmp / "out",))


@case
def fid_corrupt_cache_entry_is_recomputed(env):
    """A damaged feature-cache file (e.g. a disk error) is never read as complete: it is recomputed."""
    a, b = folder(env.tmp / "a", 2, seed=1), folder(env.tmp / "b", 2, seed=2)
    cache = env.tmp / "out" / "cache"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main([str(x) for x in fid_argv(env, a, b)]) == 0
    fresh = json.loads(buf.getvalue())
    entries = sorted((cache / "inception-features").glob("*.safetensors"))
    assert len(entries) == 2
    for e in entries:
        e.write_bytes(e.read_bytes()[:100])

    def check(out: str) -> None:
        r = json.loads(out)
        assert not r["cache_hit_a"] and not r["cache_hit_b"] and r["fid"] == fresh["fid"]
        assert all(e.stat().st_size > 1000 for e in entries)  # replaced by complete entries
    return Run(fid_argv(env, a, b), check=check, writes=(env.tmp / "out",))


@case
def fid_cache_dir_under_a_regular_file(env):
    a, b = folder(env.tmp / "a", 2, seed=1), folder(env.tmp / "b", 2, seed=2)
    f = write(env.tmp / "file", "x")
    return Run(["fid", a, b, "--bootstrap", "0", "--cache-dir", f / "cache"], error=(str(f),))


@case
def clip_score_corrupt_image(env):
    d = folder(env.tmp / "imgs", 2)
    write(d / "001.png", b"\x89PNG\r\n\x1a\n broken")
    p = write(env.tmp / "p.txt", "a red cube\na blue ball\n")
    return Run(["clip-score", d, "--prompts", p, "--clip-ckpt", env.clip], error=(str(d / "001.png"),))


@case
def clip_score_torn_manifest(env):
    d = folder(env.tmp / "imgs", 2)
    write(d / MANIFEST, '{"file": "000.png", "prompt_index": 0}\n{"file": "001.png", "prompt_')
    p = write(env.tmp / "p.txt", "a red cube\na blue ball\n")
    return Run(["clip-score", d, "--prompts", p, "--clip-ckpt", env.clip], error=(f"{d / MANIFEST}:2",))


@case
def clip_score_empty_prompt_file(env):
    d = folder(env.tmp / "imgs", 2)
    p = write(env.tmp / "p.txt", "")
    return Run(["clip-score", d, "--prompts", p, "--clip-ckpt", env.clip], error=(str(p), "no prompts"))


@case
def clip_score_underscore_prompts_matched_by_manifest(env):
    """Prompts with '_' and digits (T2I-CompBench's split('_')[0] bug): images are matched through the
    manifest that `generate` writes, never by parsing file names."""
    texts = ["cube_1_2", "12_red_cube", "_", "a_b_c_d"]
    out = env.tmp / "imgs"
    generate_folder(env.ckpt, PromptSet.from_text("\n".join(texts), "u", "test"), out)
    p = write(env.tmp / "p.txt", "\n".join(texts))

    def check(stdout: str) -> None:
        r = json.loads(stdout)
        assert (r["matching"], r["n_images"], r["n_prompts"]) == ("manifest", 4, 4)
    return Run(["clip-score", out, "--prompts", p, "--clip-ckpt", env.clip, "--json"], check=check)


# ---- prompt files (generate) ------------------------------------------------------------------------------------


@case
def prompts_empty_file(env):
    return prompts_fail(env, "p.txt", "", "no prompts")


@case
def prompts_only_blank_lines(env):
    return prompts_fail(env, "p.txt", "\n  \r\n\t\n", "no prompts")


@case
def prompts_crlf_without_final_newline(env):
    return prompts_ok(env, "p.txt", "a red cube\r\ntwo blue balls\r\na green cone",
                      ["a red cube", "two blue balls", "a green cone"])


@case
def prompts_lone_cr_line_ends(env):
    return prompts_ok(env, "p.txt", "a red cube\rtwo blue balls\r", ["a red cube", "two blue balls"])


@case
def prompts_utf8_bom(env):
    return prompts_ok(env, "p.txt", "\ufeffa red cube\na blue ball\n", ["a red cube", "a blue ball"])


@case
def prompts_bom_crlf_and_blank_lines(env):
    return prompts_ok(env, "p.txt", "\ufeff\r\n a red cube \r\n\r\na blue ball", ["a red cube", "a blue ball"])


@case
def prompts_duplicates_are_all_kept(env):
    lines = ["a red cube", "a blue ball", "a red cube", "a red cube", "a blue ball"]
    return prompts_ok(env, "p.txt", "\n".join(lines), lines)


@case
def prompts_with_slashes_and_dots(env):
    lines = ["a/b/../../escape", "..", "../../etc/passwd", "/abs/path.png", "C:\\windows\\..\\x.png", "."]
    return prompts_ok(env, "p.txt", "\n".join(lines), lines)


@case
def prompts_with_underscores(env):
    lines = ["cube_with_underscores_000001", "00003_000.png", "_"]
    return prompts_ok(env, "p.txt", "\n".join(lines), lines)


@case
def prompts_10000_characters(env):
    lines = ["a red cube " * 909 + "x", "a blue ball"]
    assert len(lines[0]) == 10_000
    return prompts_ok(env, "p.txt", "\n".join(lines), lines)


@case
def prompts_only_chinese(env):
    lines = ["一个红色的立方体在蓝色球体的左边", "两个绿色的圆锥", "紫色"]
    return prompts_ok(env, "p.txt", "\n".join(lines), lines)


@case
def prompts_html_and_script_tags(env):
    lines = ["<script>alert('x')</script>", "<img src=x onerror=alert(1)> a red cube", "&lt;b&gt; \"quoted\" 'x'"]
    return prompts_ok(env, "p.txt", "\n".join(lines), lines)


@case
def prompts_tab_and_unicode_separators(env):
    """A tab is allowed (documented); U+2028 and zero-width characters are text, not line breaks."""
    lines = ["a red\tcube", "a blue\u2028ball", "zero\u200bwidth \u202eRTL"]
    return prompts_ok(env, "p.txt", "\n".join(lines), lines)


@case
def prompts_nul_character(env):
    return prompts_fail(env, "p.txt", "a red cube\na blue\x00ball\n", ":2:", "U+0000")


@case
def prompts_escape_sequence(env):
    return prompts_fail(env, "p.txt", "a red \x1b[31mcube\n", ":1:", "U+001B")


@case
def prompts_delete_and_bell_characters(env):
    return prompts_fail(env, "p.txt", "ok\nok\nbell\x07\n", ":3:", "U+0007")


@case
def prompts_latin1_file(env):
    return prompts_fail(env, "p.txt", "a caf\xe9 table\n".encode("latin-1"), "not UTF-8")


@case
def prompts_utf16_file(env):
    return prompts_fail(env, "p.txt", "a red cube\n".encode("utf-16"), "not UTF-8")


@case
def prompts_binary_file(env):
    return prompts_fail(env, "p.txt", png_bytes(rgb(1)), "not UTF-8")


@case
def prompts_file_missing(env):
    p = env.tmp / "missing.txt"
    return Run(generate_argv(env, env.ckpt, p), error=("prompt file not found", str(p)))


@case
def prompts_file_is_a_directory(env):
    d = env.tmp / "prompts.txt"
    d.mkdir()
    return Run(generate_argv(env, env.ckpt, d), error=("is a directory", str(d)))


@case
def prompts_csv_without_prompt_column(env):
    return prompts_fail(env, "p.csv", "text,seed\na red cube,1\n", "no 'prompt' or 'caption' column")


@case
def prompts_csv_non_integer_seed(env):
    return prompts_fail(env, "p.csv", "caption,evaluation_seed\na red cube,1\na blue ball,forty-two\n", ":3:",
                        "evaluation_seed")


@case
def prompts_csv_quoted_commas_quotes_and_trailing_line_break(env):
    """COCO-30k style: a quoted caption may end in a line break (stripped) and hold commas and quotes."""
    return prompts_ok(env, "p.csv", 'caption,evaluation_seed\r\n"a red cube, left of a ball\n",1\r\n"say ""hi""",2',
                      ["a red cube, left of a ball", 'say "hi"'])


@case
def prompts_csv_line_break_inside_a_caption(env):
    """A line break inside a caption is a control character in the prompt: refused with file:line."""
    return prompts_fail(env, "p.csv", 'caption\n"a red cube\nleft of a ball"\n', "U+000A")


@case
def prompts_jsonl_not_an_object(env):
    return prompts_fail(env, "p.jsonl", '{"prompt": "a red cube"}\n["a blue ball"]\n', ":2:")


@case
def prompts_jsonl_prompt_not_a_string(env):
    return prompts_fail(env, "p.jsonl", '{"prompt": 42}\n', ":1:")


@case
def prompts_jsonl_torn_last_line(env):
    return prompts_fail(env, "p.jsonl", '{"prompt": "a red cube"}\n{"prompt": "a blu', ":2:")


# ---- checkpoints (generate --ckpt) ------------------------------------------------------------------------------


def _truncate(rel: str, keep: int | None = None):
    def damage(ckpt: Path) -> None:
        f = ckpt / rel
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return damage


@case
def ckpt_missing(env):
    p = write(env.tmp / "p.txt", "a red cube\n")
    return Run(generate_argv(env, env.tmp / "nowhere", p), error=("not found", str(env.tmp / "nowhere")))


@case
def ckpt_is_a_file(env):
    f = write(env.tmp / "model.safetensors", b"\0" * 64)
    p = write(env.tmp / "p.txt", "a red cube\n")
    return Run(generate_argv(env, f, p), error=(str(f),))


@case
def ckpt_without_bundle_json(env):
    return generate_fails(env, lambda c: (c / "bundle.json").unlink())


@case
def ckpt_bundle_json_not_json(env):
    return generate_fails(env, lambda c: write(c / "bundle.json", "{stage: I"), "bundle.json")


@case
def ckpt_bundle_json_not_an_object(env):
    return generate_fails(env, lambda c: write(c / "bundle.json", "[1, 2]"), "bundle.json")


@case
def ckpt_bundle_json_unknown_field(env):
    def damage(c: Path) -> None:
        d = json.loads((c / "bundle.json").read_text())
        write(c / "bundle.json", json.dumps({**d, "evil": "__import__('os')"}))
    return generate_fails(env, damage, "bundle.json", "evil")


def _bundle_field(key: str, value):
    def damage(c: Path) -> None:
        d = json.loads((c / "bundle.json").read_text())
        write(c / "bundle.json", json.dumps({**d, key: value}))
    return damage


@case
def ckpt_bundle_json_image_size_not_a_pair(env):
    return generate_fails(env, _bundle_field("image_px", "8x8"), "bundle.json", "image_px")


@case
def ckpt_bundle_json_guidance_not_a_number(env):
    return generate_fails(env, _bundle_field("cfg_scale", "high"), "bundle.json", "cfg_scale")


@case
def ckpt_model_truncated(env):
    return generate_fails(env, _truncate("mars/model.safetensors"), "mars/model.safetensors")


@case
def ckpt_model_zero_bytes(env):
    return generate_fails(env, _truncate("mars/model.safetensors", 0), "mars/model.safetensors")


@case
def ckpt_model_header_garbage(env):
    return generate_fails(env, lambda c: write(c / "mars/model.safetensors", b"\xff" * 8 + b"{not json" * 10),
                          "mars/model.safetensors")


@case
def ckpt_model_wrong_shape(env):
    def damage(c: Path) -> None:
        f = c / "mars" / "model.safetensors"
        t = load_file(f)
        t["embed_text.weight"] = t["embed_text.weight"][:, :-2].contiguous()
        save_file(t, f)
    return generate_fails(env, damage, "mars/model.safetensors", "embed_text.weight")


@case
def ckpt_model_missing_tensor(env):
    def damage(c: Path) -> None:
        f = c / "mars" / "model.safetensors"
        t = load_file(f)
        del t["vision_head.weight"]
        save_file(t, f)
    return generate_fails(env, damage, "mars/model.safetensors", "vision_head.weight")


@case
def ckpt_model_config_corrupt(env):
    return generate_fails(env, lambda c: write(c / "mars/config.json", '{"name": "tiny", '), "mars/config.json")


@case
def ckpt_weights_from_another_preset(env):
    """mars/ holds another model size's weights under this bundle's config: refused by shape, naming the file."""
    def damage(c: Path) -> None:
        from mars_ref.config import MarsConfig
        from mars_ref.model import MarsModel
        cfg = MarsConfig.from_json((c / "mars" / "config.json").read_text())
        other = MarsModel(MarsConfig(**{**cfg.to_dict(), "name": "other", "hidden_size": cfg.hidden_size * 2}))
        save_file({k: v.contiguous() for k, v in other.state_dict().items()}, c / "mars" / "model.safetensors")
    return generate_fails(env, damage, "mars/model.safetensors", "shape")


@case
def ckpt_vq_from_another_preset(env):
    """vq/ is a whole, valid VQ of another preset (512 codes): the bundle's model has 64."""
    def damage(c: Path) -> None:
        shutil.rmtree(c / "vq")
        save_vq(VQModel(vq_preset("world-f4")), c / "vq")
    return generate_fails(env, damage, "codebook", "512")


@case
def ckpt_hires_from_another_bundle(env):
    """A Stage III model whose vocabulary does not match: refused when loading, naming the file."""
    def damage(c: Path) -> None:
        other = tiny_model(200, 64, seed=5)
        other.save(c / "hires")
    return generate_fails(env, damage, "hires")


@case
def ckpt_vq_weights_truncated(env):
    return generate_fails(env, _truncate("vq/model.safetensors"), "vq/model.safetensors")


@case
def ckpt_tokenizer_missing(env):
    return generate_fails(env, lambda c: shutil.rmtree(c / "tokenizer"), "tokenizer")


@case
def ckpt_tokenizer_corrupt(env):
    return generate_fails(env, lambda c: write(c / "tokenizer/tokenizer.json", "{"), "tokenizer")


# ---- outputs ------------------------------------------------------------------------------------------------------


@case
def out_under_a_regular_file(env):
    f = write(env.tmp / "file", "x")
    p = write(env.tmp / "p.txt", "a red cube\n")
    return Run(["generate", "--ckpt", env.ckpt, "--prompts", p, "--out", f / "out"], error=(str(f),))


@case
def out_is_a_regular_file(env):
    f = write(env.tmp / "out.png", "x")
    p = write(env.tmp / "p.txt", "a red cube\n")
    return Run(["generate", "--ckpt", env.ckpt, "--prompts", p, "--out", f], error=(str(f),))


@case
def out_holds_another_jobs_unreadable_job_file(env):
    out = env.tmp / "out"
    write(out / JOB, "{half a job")
    p = write(env.tmp / "p.txt", "a red cube\n")
    return Run(generate_argv(env, env.ckpt, p), error=(str(out / JOB),), writes=(out,))


@case
def report_out_under_a_regular_file(env):
    run = results_file(env, [METRIC])
    f = write(env.tmp / "file", "x")
    return Run(["report", run, "--out", f / "out"], error=(str(f),))


@case
def report_out_not_writable_as_non_root(env):
    """An unwritable output directory (0555). Tests run as root, for whom permission bits do not apply, so
    the command then runs without the capability that overrides them."""
    run = results_file(env, [METRIC])
    locked = env.tmp / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    return Run(["report", run, "--out", locked / "out"], error=(str(locked / "out"), "Permission denied"),
               subprocess=True, preexec=_without_dac_override if os.geteuid() == 0 else None)


def _without_dac_override() -> None:
    """Drop CAP_DAC_OVERRIDE from the bounding set before exec: the child, still root, then obeys the
    permission bits of the folder (root would otherwise write into a 0555 folder)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 1, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _full_disk(limit: int) -> Callable[[], None]:
    """The child may write files of at most `limit` bytes; a larger write fails with EFBIG (SIGXFSZ is
    ignored so that it arrives as an OSError, like ENOSPC on a full disk)."""
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return preexec


@case
def disk_full_while_generating(env):
    """The disk fills up at the manifest: exit 1 naming it, no manifest (the folder stays resumable), no
    temporary files left; a rerun with space completes the same images."""
    p = write(env.tmp / "p.txt", "a red cube\na blue ball\n")
    out = env.tmp / "out"

    def check_after(stderr: str) -> None:
        assert not (out / MANIFEST).exists() and not list(out.glob(".*.tmp"))
        assert len(list(out.glob("*.png"))) == 2
        assert main(["generate", "--ckpt", str(env.ckpt), "--prompts", str(p), "--out", str(out)]) == 0
        assert len(read_manifest(out)) == 2
    return Run(["generate", "--ckpt", env.ckpt, "--prompts", p, "--out", out], error=(str(out / MANIFEST),),
               subprocess=True, preexec=_full_disk(800), writes=(out,), check=check_after)


@case
def disk_full_while_writing_the_report(env):
    run = results_file(env, [METRIC, {**METRIC, "label": "b", "value": 2.0}])
    out = env.tmp / "out"

    def check_after(stderr: str) -> None:
        assert not list(out.glob(".*.tmp")) and not (out / "report.html").exists()
    return Run(["report", run, "--out", out], error=(str(out),), subprocess=True, preexec=_full_disk(2000),
               writes=(out,), check=check_after)


# ---- results files (report) -------------------------------------------------------------------------------------


@case
def report_torn_results_line(env):
    return report_fails(env, [METRIC, '{"kind": "metric", "val'], ":2:")


@case
def report_empty_results(env):
    run = results_file(env, [])
    return Run(["report", run, "--out", env.tmp / "out"], error=(str(run), "no results rows"),
               writes=(env.tmp / "out",))


@case
def report_row_not_an_object(env):
    return report_fails(env, [METRIC, "[1, 2]"], "row 2")


@case
def report_metric_row_without_metric(env):
    return report_fails(env, [{"kind": "metric", "label": "a", "value": 1.0}], "row 1", "metric")


@case
def report_metric_value_not_a_number(env):
    return report_fails(env, [{**METRIC, "value": "high"}], "row 1", "value")


@case
def report_samples_row_without_folder(env):
    return report_fails(env, [METRIC, {"kind": "samples", "label": "x"}], "row 2", "images_dir")


@case
def report_history_row_without_value(env):
    h = write(env.tmp / "history.jsonl", json.dumps({"commit": "a", "metric": "fid"}) + "\n")
    return Run(["report", "--history", h, "--out", env.tmp / "out"], error=(str(h), "row 1", "value"),
               writes=(env.tmp / "out",))


@case
def report_labels_with_markup_and_mathtext(env):
    """Labels are user text: `$...$` must not reach matplotlib's math parser, `<b>` must be escaped."""
    run = results_file(env, [{**METRIC, "label": "cost $x^ and $"}, {**METRIC, "label": "<b>bold</b>"}])
    out = env.tmp / "out"

    def check(stdout: str) -> None:
        page = (out / "report.html").read_text(encoding="utf-8")
        assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page and "cost $x^ and $" in page
    return Run(["report", run, "--out", out, "--json"], check=check, writes=(out,))


# ---- recipe presets (train stage) -------------------------------------------------------------------------------


@case
def preset_invalid_toml(env):
    return preset_fails(env, "[world\nn = 1\n", "invalid TOML")


@case
def preset_binary_file(env):
    return preset_fails(env, b"\xff\xfe\x00\x01", "UTF-8")


@case
def preset_unknown_table(env):
    return preset_fails(env, XS_PRESET.read_text() + "\n[surprise]\nx = 1\n", "surprise")


@case
def preset_missing_table(env):
    text = XS_PRESET.read_text()
    return preset_fails(env, text[: text.index("[stageIII]")], "stageIII")


@case
def preset_wrong_type_in_a_stage(env):
    text = re.sub(r"(\[stage0\][^\n]*\n)steps = \d+", r'\1steps = "many"', XS_PRESET.read_text(), count=1)
    assert 'steps = "many"' in text
    return preset_fails(env, text, "stage0", "steps")


@case
def preset_wrong_type_in_world(env):
    return preset_fails(env, XS_PRESET.read_text().replace("n = 2000", 'n = "many"', 1), "world", "n")


@case
def preset_unknown_vq_key(env):
    text = XS_PRESET.read_text().replace("[stage0]", "learning_rate = 1.0\n\n[stage0]", 1)
    return preset_fails(env, text, "vq", "learning_rate")


@case
def preset_unknown_vq_preset(env):
    text = re.sub(r'^preset = "[^"]*"', 'preset = "nope"', XS_PRESET.read_text(), count=1, flags=re.M)
    return preset_fails(env, text, "nope")


@case
def preset_bad_model_field(env):
    return preset_fails(env, XS_PRESET.read_text().replace("hidden_size = 128", 'hidden_size = "wide"'),
                        "hidden_size")


@case
def preset_file_missing(env):
    p = env.tmp / "nope.toml"
    return Run(["train", "stage", "I", "--preset", p, "--cache", env.tmp / "cache"], error=(str(p),))


# ---- the runner -----------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[Path, tuple]:
    out = {}
    for p in root.rglob("*"):
        st = p.lstat()
        out[p] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def console_script() -> list[str]:
    script = Path(sys.executable).parent / "mars-eval"
    return [str(script)] if script.exists() else [sys.executable, "-c",
                                                  "from mars_eval.cli.main import entry; entry()"]


def run_case(run: Run, capsys) -> tuple[int, str, str]:
    argv = [str(a) for a in run.argv]
    if run.subprocess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **run.env}
        r = subprocess.run(console_script() + argv, capture_output=True, text=True, preexec_fn=run.preexec,
                           env=env, timeout=300)
        return r.returncode, r.stdout, r.stderr
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 50


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, shared, inception, tmp_path, capsys):
    ckpt, clip = shared
    env = Env(tmp_path / "case", ckpt, clip)
    env.tmp.mkdir()
    run = CASES[name](env)
    capsys.readouterr()
    before = snapshot(tmp_path)
    code, out, err = run_case(run, capsys)
    after = snapshot(tmp_path)
    assert "Traceback" not in err, err
    if run.error is not None:
        assert code == 1, (code, out, err)
        *before_error, line = err.splitlines()
        # one line; in a subprocess a progress bar's final render may come before it (never in-process)
        assert line.startswith("error: ") and err.endswith("\n"), err
        assert all("━" in x for x in before_error) and not (before_error and not run.subprocess), err
        for fragment in run.error:
            assert fragment in line, (fragment, err)
    else:
        assert code == 0, err
    if run.check is not None:
        run.check(out if run.error is None else err)
    changed = [p for p in after if before.get(p) != after[p] and not (p.is_dir() and p in before)]
    changed += [p for p in before if p not in after]
    allowed = tuple(run.writes)
    outside = [p for p in changed if not any(p == w or w in p.parents for w in allowed)]
    assert outside == [], outside
